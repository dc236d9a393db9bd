"""Server-side aggregation: which Flower strategy, and how its state is saved and restored.

All strategies are Flower's own (Message API): sample-weighted FedAvg, FedProx (FedAvg plus a
proximal term the clients apply), FedAvgM (server momentum) and FedAdam (adaptive server
optimizer). Their running state (momentum, moments) is part of every global checkpoint.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx

from coopasd.config import FederationConfig


def make_strategy(cfg: FederationConfig, n_factories: int) -> FedAvg:
    """The configured strategy; every factory is asked each round, ``min_participants`` must answer."""
    common = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": min(cfg.min_participants, n_factories),
        "min_evaluate_nodes": min(cfg.min_participants, n_factories),
        "min_available_nodes": min(cfg.min_participants, n_factories),
    }
    if cfg.strategy == "fedavg":
        return FedAvg(**common)
    if cfg.strategy == "fedprox":
        return FedProx(proximal_mu=cfg.proximal_mu, **common)
    if cfg.strategy == "fedavgm":
        return FedAvgM(server_learning_rate=cfg.server_lr, server_momentum=cfg.server_momentum, **common)
    if cfg.strategy == "fedadam":
        return FedAdam(eta=cfg.server_lr, eta_l=1e-3, tau=1e-6, **common)
    raise ValueError(f"unknown strategy '{cfg.strategy}'")


def strategy_state(strategy: FedAvg) -> dict:
    """The strategy's running state as tensors (empty for plain FedAvg / FedProx)."""
    state: dict = {}
    if isinstance(strategy, FedAvgM) and strategy.momentum_vector is not None:
        state["momentum_vector"] = [torch.from_numpy(np.asarray(v).copy()) for v in strategy.momentum_vector]
    for name in ("m_t", "v_t"):
        value = getattr(strategy, name, None)
        if value:
            state[name] = {k: torch.from_numpy(np.asarray(v).copy()) for k, v in value.items()}
    return state


def restore_strategy_state(strategy: FedAvg, state: dict) -> None:
    if "momentum_vector" in state:
        strategy.momentum_vector = [v.numpy() for v in state["momentum_vector"]]  # type: ignore[attr-defined]
    for name in ("m_t", "v_t"):
        if name in state:
            setattr(strategy, name, {k: v.numpy() for k, v in state[name].items()})
