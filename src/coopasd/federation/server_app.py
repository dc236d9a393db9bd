"""The Flower ServerApp: rounds of configure -> local training -> validated aggregation,
a global checkpoint per round, per-round federated evaluation, and the final scoring round.

The server sees parameters and metric values only: never audio, features or embeddings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Context, Message, MessageType
from flwr.serverapp import Grid, ServerApp

from coopasd.config import RunConfig, from_toml_text, to_toml
from coopasd.errors import CoopasdError
from coopasd.federation.checkpoint import GlobalCheckpoint, params_hash
from coopasd.federation.privacy import PrivacyServer
from coopasd.federation.records import (
    evaluate_content,
    factory_of,
    received_hash,
    record_bytes,
    reply_arrays,
    reply_metric,
    section_metrics,
    shared_keys,
    to_record,
    train_config,
)
from coopasd.federation.strategy import make_strategy, restore_strategy_state, strategy_state
from coopasd.metrics import SectionMetrics, summarize
from coopasd.model.checkpoint import initial_encoder
from coopasd.report import FEDERATION_FILE, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """The run's settings and where the server keeps its checkpoints and results."""

    config: RunConfig
    run_dir: Path
    n_factories: int
    resume: bool = False
    on_round: Callable[[dict], None] | None = None  # progress hook (the CLI's progress bar)


def _validate(replies: list[Message], keys: list[str], reference: dict[str, torch.Tensor]) -> list[Message]:
    """Keep replies that carry exactly the shared keys with the right shapes and finite values."""
    good = []
    for msg in replies:
        if msg.has_error():
            log.warning("node %s failed this round: %s", msg.metadata.src_node_id, msg.error.reason)
            continue
        arrays = reply_arrays(msg)
        state = arrays.to_torch_state_dict() if arrays is not None else {}
        problem = None
        if sorted(state) != sorted(keys):
            problem = "unexpected parameter set"
        elif any(tuple(state[k].shape) != tuple(reference[k].shape) for k in keys):
            problem = "parameter shapes differ from the global model"
        elif any(v.is_floating_point() and not torch.isfinite(v).all() for v in state.values()):
            problem = "non-finite parameters"
        if problem:
            log.warning("rejecting the update of node %s: %s", msg.metadata.src_node_id, problem)
            continue
        good.append(msg)
    return good


def _evaluate(grid: Grid, arrays: ArrayRecord, server_round: int, final: bool, timeout: float) -> dict:
    """Ask every factory to score its own test clips; returns the summary of the metric values."""
    messages = [
        Message(evaluate_content(arrays, server_round, final), dst_node_id=n, message_type=MessageType.EVALUATE)
        for n in grid.get_node_ids()
    ]
    sections: list[SectionMetrics] = []
    factories = []
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            log.warning("node %s could not evaluate: %s", reply.metadata.src_node_id, reply.error.reason)
            continue
        factories.append(factory_of(reply))
        sections += section_metrics(reply)
    if not sections:
        return {"factories": factories}
    return summarize(sections) | {"factories": sorted(factories)}


def run_server(grid: Grid, settings: ServerSettings) -> dict:
    """All rounds, checkpoints and the final evaluation; writes ``federation.json`` and returns it."""
    cfg, fed = settings.config, settings.config.federation
    ckpt_dir = settings.run_dir / "checkpoints"
    encoder, origin = initial_encoder(cfg.model, cfg.train.seed)
    keys = shared_keys(encoder, fed.share)
    strategy = make_strategy(fed, settings.n_factories)
    private = PrivacyServer.of(cfg, settings.n_factories, grid)  # [privacy]: None = plain exchange (privacy.py)
    arrays = to_record(encoder, keys)
    start_round, history = 1, []
    if settings.resume:
        latest = ckpt_dir / "latest.pt"
        if not latest.exists():
            raise CoopasdError(f"{latest}: nothing to resume from")
        ckpt = GlobalCheckpoint.load(latest)
        if from_toml_text(ckpt.config_toml) != cfg:
            raise CoopasdError(f"{latest}: the checkpoint was made with a different config; resume with the same one")
        arrays = ArrayRecord(ckpt.params)
        restore_strategy_state(strategy, ckpt.strategy_state)
        start_round, history = ckpt.round + 1, ckpt.history
        log.info("resuming after round %d (parameters %s)", ckpt.round, params_hash(ckpt.params)[:12])
    reference = arrays.to_torch_state_dict()
    for server_round in range(start_round, fed.rounds + 1):
        started = time.perf_counter()
        config = train_config(fed.lr_decay ** (server_round - 1))
        messages = list(strategy.configure_train(server_round, arrays, config, grid))
        replies = list((private or grid).send_and_receive(messages, timeout=fed.round_timeout))
        good = sorted(_validate(replies, keys, reference), key=factory_of)  # fixed order: reproducible sums
        entry: dict = {
            "round": server_round,
            "asked": len(messages),
            "answered": len(good),
            "bytes_down_per_factory": record_bytes(arrays),
            "bytes_up": {factory_of(m): record_bytes(m.content.array_records["arrays"]) for m in good},
            "received_hash": {factory_of(m): received_hash(m) for m in good},
            "train_seconds": {factory_of(m): reply_metric(m, "train-seconds") for m in good},
        }
        if len(good) < fed.min_participants:
            log.warning(
                "round %d: only %d of %d factories answered (minimum %d); global model unchanged",
                server_round,
                len(good),
                len(messages),
                fed.min_participants,
            )
            entry["aggregated"] = False
        else:
            if private:  # [privacy]: central DP noise on the clipped updates' sum; the round's accounting record
                good, entry["privacy"] = private.aggregate_input(good, arrays)
            new_arrays, metrics = strategy.aggregate_train(server_round, good)
            if new_arrays is not None:
                arrays = new_arrays
            entry["aggregated"] = True
            entry["train_loss"] = float(metrics["train-loss"]) if metrics else None
        entry["global_hash"] = params_hash(arrays.to_torch_state_dict())[:16]
        entry["seconds"] = time.perf_counter() - started
        if fed.evaluate_every and server_round % fed.evaluate_every == 0 and server_round < fed.rounds:
            summary = _evaluate(grid, arrays, server_round, False, fed.round_timeout)
            entry["official_score"] = summary.get("official_score")
        history.append(entry)
        GlobalCheckpoint(
            server_round, arrays.to_torch_state_dict(), strategy_state(strategy), to_toml(cfg), history
        ).save(ckpt_dir, fed.keep_checkpoints)
        if settings.on_round:
            settings.on_round(entry)
    final = _evaluate(grid, arrays, fed.rounds, True, fed.round_timeout)
    if history and "official_score" in final:
        history[-1]["official_score"] = final["official_score"]
    result = final | {
        "rounds": history,
        "encoder_start": origin,
        "shared": fed.share,
        "strategy": fed.strategy,
        "final_hash": params_hash(arrays.to_torch_state_dict()),
    }
    if private:  # [privacy]: the guarantee each factory has after the run
        result["privacy"] = private.report(history)
    write_json(settings.run_dir / FEDERATION_FILE, result)
    return result


def make_server_app(settings_of: Callable[[Context], ServerSettings]) -> ServerApp:
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, settings_of(context))

    return server


def settings_from_context(context: Context) -> ServerSettings:
    """Deployment: run config keys ``run-config`` (TOML text), ``run-dir``, ``factories`` (count), ``resume``."""
    rc = context.run_config
    text = str(rc.get("run-config", ""))
    cfg = from_toml_text(text) if text else RunConfig()
    return ServerSettings(
        cfg, Path(str(rc.get("run-dir", "coopasd-server"))), int(rc.get("factories", 2)), bool(rc.get("resume", False))
    )


app = make_server_app(settings_from_context)
__all__ = ["ServerSettings", "app", "make_server_app", "run_server"]
