"""Server-side aggregation: which Flower strategy, how replies are screened before they count,
and how the strategy's state is saved and restored.

Two choices compose (``[federation] strategy`` and ``aggregation``):
- the server optimizer, Flower's FedAvg, FedProx (FedAvg plus a proximal term the clients
  apply), FedAvgM (server momentum) or FedAdam (adaptive server optimizer);
- the rule that combines the factories' models into one, Flower's weighted mean (FedAvg),
  coordinate-wise median (FedMedian), trimmed mean (FedTrimmedAvg) or Multi-Krum (MultiKrum).
The optimizers call ``super().aggregate_train`` and then take their step from the result, so a
class that lists the optimizer before the rule (``class _(FedAvgM, FedMedian)``) puts the rule
in that ``super()`` call: the momentum (or Adam) step is applied to the robust combination.
``max_hostile`` (f, always fewer than half the factories) sets how much the rules distrust:
the trimmed mean cuts f values per coordinate at each end, Multi-Krum averages the n - f
updates with the best Krum scores (refused unless n > 2f + 2: :func:`check_rule`). The default,
trimmed_mean with FedAvgM, was chosen with ``benchmarks/hostile.py``: no attack kind cost the honest
factories anything there, and unlike Multi-Krum it does not drop the most unusual honest factory's
whole update every round.

Before a reply counts, :func:`screen_train` checks it against the protocol and the global
model: the exact records and keys, shapes, dtypes, finite values, an example count that is a
positive integer, and an update norm no larger than ``update_norm_bound`` times the round's
median; each example count is then capped at ``weight_cap`` times the round's median claim (a
factory that claims 1e9 examples weighs as much as twice a typical one). :func:`screen_evaluate`
checks metric values (finite, in [0, 1], counts positive integers) before they enter a score.
Every rejection is logged with the factory and the reason and returned for the round history.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedMedian, FedProx, FedTrimmedAvg, MultiKrum

from coopasd.config.settings import FederationConfig
from coopasd.errors import ConfigError
from coopasd.federation.records import (
    SCORE_METRICS,
    EvaluateReply,
    MalformedReply,
    ReportMetrics,
    failed_node,
    failure_reason,
    sender,
    unpack_evaluate_reply,
    unpack_train_reply,
)

log = logging.getLogger(__name__)

WEIGHT_KEY = "aggregation-weight"  # written by the server into each accepted reply: the weight it trusts
RULES: dict[str, type[FedAvg]] = {"mean": FedAvg, "median": FedMedian, "trimmed_mean": FedTrimmedAvg, "krum": MultiKrum}
OPTIMIZERS: dict[str, type[FedAvg]] = {"fedavg": FedAvg, "fedprox": FedProx, "fedavgm": FedAvgM, "fedadam": FedAdam}


def compose(optimizer: type[FedAvg], rule: type[FedAvg]) -> type[FedAvg]:
    """A strategy class whose server step (``optimizer``) is taken from ``rule``'s combination."""
    if rule is FedAvg:
        return optimizer
    if optimizer is FedAvg:
        return rule
    return type(f"{optimizer.__name__}Over{rule.__name__}", (optimizer, rule), {})


def trim_count(max_hostile: int, n_factories: int) -> int:
    """Hostile factories a rule guards against: ``max_hostile``, but always fewer than half."""
    return max(0, min(max_hostile, (n_factories - 1) // 2))


def check_rule(cfg: FederationConfig, n_factories: int) -> None:
    """Refuse a robust rule that cannot hold for ``n_factories`` (a ConfigError with the numbers).

    Krum's guarantee needs n > 2f + 2 with f = ``max_hostile``: with fewer factories the honest ones
    cannot outnumber the hostile ones around every update, and one noisy update can be chosen.
    """
    f = cfg.max_hostile
    if cfg.aggregation == "krum" and n_factories <= 2 * f + 2:
        raise ConfigError(
            f"[federation] aggregation = 'krum' with max_hostile = {f} needs more than 2f + 2 = {2 * f + 2} "
            f"factories, this federation has {n_factories}: use 'trimmed_mean' or 'median'"
            + (", or lower max_hostile" if f > 0 else "")
        )


def make_strategy(cfg: FederationConfig, n_factories: int) -> FedAvg:
    """The configured strategy; every factory is asked each round, ``min_participants`` must answer."""
    if cfg.strategy not in OPTIMIZERS or cfg.aggregation not in RULES:
        raise ValueError(f"unknown strategy '{cfg.strategy}' or aggregation '{cfg.aggregation}'")
    check_rule(cfg, n_factories)
    kwargs: dict = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": min(cfg.min_participants, n_factories),
        "min_evaluate_nodes": min(cfg.min_participants, n_factories),
        "min_available_nodes": min(cfg.min_participants, n_factories),
        "weighted_by_key": WEIGHT_KEY,
    }
    if cfg.strategy == "fedprox":
        kwargs["proximal_mu"] = cfg.proximal_mu
    if cfg.strategy == "fedavgm":
        kwargs |= {"server_learning_rate": cfg.server_lr, "server_momentum": cfg.server_momentum}
    if cfg.strategy == "fedadam":
        kwargs |= {"eta": cfg.server_lr, "eta_l": 1e-3, "tau": 1e-6}
    strategy = compose(OPTIMIZERS[cfg.strategy], RULES[cfg.aggregation])(**kwargs)
    f = trim_count(cfg.max_hostile, n_factories)
    if isinstance(strategy, FedTrimmedAvg):
        # Flower cuts int(beta * replies) per end: f when everyone answers, fewer when updates
        # were rejected or missing (then fewer hostile ones can be left)
        strategy.beta = f / n_factories + 1e-6
    if isinstance(strategy, MultiKrum):  # Multi-Krum: average the n - f updates with the best Krum scores
        strategy.num_malicious_nodes = f
        strategy.num_nodes_to_select = n_factories - f
    return strategy


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


# --- screening ------------------------------------------------------------------------------------------------


def lower_median(values: Iterable[float]) -> float:
    """The lower middle value (with two values, the smaller: one outlier cannot drag it up)."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def update_problem(params: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> str | None:
    """Why ``params`` cannot be aggregated with the global ``reference`` (keys, shapes, dtypes, finite)."""
    if set(params) != set(reference):
        missing, extra = sorted(set(reference) - set(params)), sorted(set(params) - set(reference))
        return f"unexpected parameter set (missing {missing[:3]}, extra {extra[:3]})"
    for key, ref in reference.items():
        value = params[key]
        if tuple(value.shape) != tuple(ref.shape):
            return f"{key}: shape {tuple(value.shape)} differs from the global model's {tuple(ref.shape)}"
        if value.dtype != ref.dtype:
            return f"{key}: dtype {value.dtype} differs from the global model's {ref.dtype}"
        if value.is_floating_point() and not torch.isfinite(value).all():
            return f"{key}: non-finite values"
    return None


def update_norm(params: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """L2 norm of the update ``params - reference`` over all floating-point tensors."""
    floats = [k for k, ref in reference.items() if ref.is_floating_point()]
    return math.sqrt(sum(float(torch.sum((params[k].double() - reference[k].double()) ** 2)) for k in floats))


def norm_outliers(norms: dict[str, float], bound: float) -> dict[str, str]:
    """{factory: reason} for updates longer than ``bound`` times the round's (lower) median norm."""
    if bound <= 0 or not norms:
        return {}
    median = lower_median(norms.values())
    if median <= 0:
        return {}
    return {
        name: f"update norm {norm:.4g} is {norm / median:.1f} x the round's median {median:.4g} (bound {bound:g})"
        for name, norm in norms.items()
        if norm > bound * median
    }


def capped_weights(claims: dict[str, int], cap: float) -> dict[str, float]:
    """Each claimed example count, capped at ``cap`` times the round's (lower) median claim."""
    if not claims:
        return {}
    limit = cap * lower_median(claims.values())
    return {name: float(min(claim, limit)) for name, claim in claims.items()}


def train_metric_problem(metrics: dict[str, int | float]) -> str | None:
    """Why a train reply's metric values are not acceptable (a count must be a positive integer)."""
    count = metrics["num-examples"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return f"num-examples = {count!r} is not a positive integer"
    odd = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    return f"non-finite metric values {odd}" if odd else None


@dataclass
class Screened:
    """One round's train replies after screening: the accepted ones as new messages (arrays in the
    global model's key order, the trusted weight added) and, per factory, rejections, norms and weights."""

    accepted: list[Message] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    norms: dict[str, float] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    claims: dict[str, int] = field(default_factory=dict)


def _reject(rejected: dict[str, str], name: str, reason: str, what: str) -> None:
    log.warning("rejecting the %s of %s: %s", what, name, reason)
    rejected[name] = reason


def screen_train(
    replies: Iterable[Message],
    reference: dict[str, torch.Tensor],
    cfg: FederationConfig,
    names: Mapping[int, str] | None = None,
) -> Screened:
    """Check every train reply against the protocol and the global model ``reference``; see the module doc.
    ``names``: node id -> factory, to name a node whose training failed (one line: why)."""
    out = Screened()
    candidates: dict[str, tuple[Message, dict[str, torch.Tensor]]] = {}
    for msg in replies:
        if msg.has_error():
            log.warning("%s failed this round: %s", failed_node(msg, names or {}), failure_reason(msg.error.reason))
            continue
        name = sender(msg)
        try:
            reply = unpack_train_reply(msg)
            problem = update_problem(reply.params, reference) or train_metric_problem(reply.metrics)
        except MalformedReply as err:
            problem = f"malformed reply: {err}"
        if name in candidates or name in out.rejected:  # two nodes speak for one factory: trust neither
            problem = "two replies from the same factory in one round"
            if candidates.pop(name, None):
                del out.claims[name]
        if problem:
            _reject(out.rejected, name, problem, "update")
            continue
        candidates[name] = (msg, reply.params)
        out.claims[name] = int(reply.metrics["num-examples"])
    out.norms = {name: update_norm(params, reference) for name, (_, params) in candidates.items()}
    for name, reason in norm_outliers(out.norms, cfg.update_norm_bound).items():
        _reject(out.rejected, name, reason, "update")
        del candidates[name], out.claims[name]
    out.weights = capped_weights(out.claims, cfg.weight_cap)
    for name in sorted(candidates):  # a fixed order: reproducible sums
        msg, params = candidates[name]
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: params[k] for k in reference}),
                "metrics": MetricRecord(dict(msg.content["metrics"]) | {WEIGHT_KEY: out.weights[name]}),
                "info": ConfigRecord(dict(msg.content["info"])),
            }
        )
        out.accepted.append(Message(content, metadata=msg.metadata))  # the received message stays as it came
    return out


def metric_problem(reply: EvaluateReply) -> str | None:
    """Why an evaluate reply's values cannot enter a score: not finite, outside [0, 1], bad counts."""
    scores = [
        (f"{m.machine_type}/{m.section}/{k}", v)
        for m in reply.sections
        for k, v in zip(SCORE_METRICS, m.values, strict=True)
    ]
    if reply.triple is not None:
        scores += list(zip(SCORE_METRICS, reply.triple, strict=True))
    for key, value in scores:
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            return f"{key} = {value!r} is not a value in [0, 1]"
    if reply.n_examples is not None and reply.n_examples < 1:
        return f"num-examples = {reply.n_examples} is not positive"
    for m in reply.sections:
        if not 0 < m.n_anomalies < m.n_clips:
            return f"{m.machine_type}/{m.section}: counts n_clips = {m.n_clips}, n_anomalies = {m.n_anomalies}"
    return None


def screen_evaluate(
    replies: Iterable[Message], report: ReportMetrics, names: Mapping[int, str] | None = None
) -> tuple[list[EvaluateReply], dict[str, str]]:
    """The evaluate replies whose structure and values are valid, and {factory: reason} for the others
    (``names``: node id -> factory, to name a node that could not evaluate)."""
    accepted: dict[str, EvaluateReply] = {}
    rejected: dict[str, str] = {}
    for msg in replies:
        if msg.has_error():
            log.warning("%s could not evaluate: %s", failed_node(msg, names or {}), failure_reason(msg.error.reason))
            continue
        name = sender(msg)
        try:
            reply = unpack_evaluate_reply(msg, report)
            problem = metric_problem(reply)
        except MalformedReply as err:
            problem = f"malformed reply: {err}"
        if name in accepted or name in rejected:  # two nodes speak for one factory: trust neither
            problem = "two replies from the same factory"
        if problem:
            _reject(rejected, name, problem, "metric values")
            accepted.pop(name, None)
            continue
        accepted[name] = reply
    return [accepted[n] for n in sorted(accepted)], rejected
