"""The Flower ServerApp: rounds of configure -> local training -> validated aggregation,
a global checkpoint per round, per-round federated evaluation, and the final scoring round.

The server sees parameters and metric values only: never audio, features or embeddings. It
believes none of it unchecked: every reply is screened (:mod:`coopasd.federation.strategy`) and
each rejected one is logged and recorded in the round's ``rejected`` ({factory: reason}). A reply
speaks only for the factory its node is (:mod:`coopasd.federation.identity`). The server's official
score is computed from metric values the factories report about their own test clips: it is labelled
so (``official_score_basis``), with the score without each factory and the factories that lift it by
more than :data:`LIFT_WARNING` (logged). A run in which no round was aggregated ends with ``error``.
With ``[privacy]`` the exchange and the aggregate go through :mod:`coopasd.federation.privacy`: under
SecAgg+ the server holds only the sum, so the robust rule sees that sum (clipping, with DP, is what
bounds one factory's influence there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, Context, Message, MessageType
from flwr.serverapp import Grid, ServerApp

from coopasd.config.settings import RunConfig, from_toml_text, to_toml
from coopasd.dcase.metrics import harmonic_mean, summarize
from coopasd.errors import CoopasdError
from coopasd.federation.checkpoint import GlobalCheckpoint, params_hash
from coopasd.federation.identity import Identities
from coopasd.federation.privacy import PrivacyServer, secagg_upload_mb
from coopasd.federation.records import (
    EvaluateReply,
    evaluate_content,
    factory_of,
    received_hash,
    record_bytes,
    reply_metric,
    shared_keys,
    to_record,
    train_config,
)
from coopasd.federation.stopping import StoppableGrid
from coopasd.federation.strategy import (
    make_strategy,
    restore_strategy_state,
    screen_evaluate,
    screen_train,
    strategy_state,
)
from coopasd.model.encoders import initial_encoder, wants_autoencoder
from coopasd.rundir.writer import FEDERATION_FILE, write_json

log = logging.getLogger(__name__)

SELF_REPORTED = "self-reported by the factories (their own test clips), not verified by the server"
LIFT_WARNING = 0.02  # a factory whose own values lift the server's score by more than this is named in the log
# (once per run: the first round it happens; every round line and federation.json keep showing it)


@dataclass(frozen=True)
class ServerSettings:
    """The run's settings and where the server keeps its checkpoints and results."""

    config: RunConfig
    run_dir: Path
    n_factories: int
    resume: bool = False
    on_round: Callable[[dict], None] | None = None  # progress hook (the CLI's progress bar)
    on_reply: Callable[[Message], None] | None = None  # audit hook: every reply as received, before screening
    stop: threading.Event | None = None  # set on Ctrl-C: every wait for replies ends (stopping.py)


def _received(grid: Grid | PrivacyServer, messages: list[Message], settings: ServerSettings) -> list[Message]:
    """Send and wait for the replies; each one goes to the audit hook as it arrived."""
    replies = list(grid.send_and_receive(messages, timeout=settings.config.federation.round_timeout))
    for reply in replies:
        if settings.on_reply is not None:
            settings.on_reply(reply)
    return replies


def _evaluate(
    grid: Grid,
    arrays: ArrayRecord,
    server_round: int,
    final: bool,
    settings: ServerSettings,
    identities: Identities,
    warned: set[str],
) -> dict:
    """Ask every factory to score its own test clips; the summary of the valid metric values, the
    factories that sent them and ``rejected`` ({factory: reason}). ``warned``: the factories already
    named in a lift warning this run (updated)."""
    started = time.perf_counter()
    messages = [
        Message(evaluate_content(arrays, server_round, final), dst_node_id=n, message_type=MessageType.EVALUATE)
        for n in grid.get_node_ids()
    ]
    log.info(
        "%s: %d factories %sbuild memory banks with the global model and score their own test clips",
        "final evaluation" if final else f"round {server_round}",
        len(messages),
        "personalize it, " if final and settings.config.federation.personalize_epochs else "",
    )
    replies, impostors = identities.check(_received(grid, messages, settings))
    accepted, rejected = screen_evaluate(replies, settings.config.privacy.report_metrics, identities.by_node)
    rejected |= impostors
    summary: dict = {"factories": [r.factory for r in accepted], "rejected": rejected}
    summary["seconds"] = time.perf_counter() - started
    sections = [s for r in accepted for s in r.sections]
    if sections:
        summary |= summarize(sections)
    score = _score(accepted)
    if score is not None:
        summary |= {"official_score": score, "official_score_basis": SELF_REPORTED} | _lifts(accepted, score, warned)
    return summary


def _score(replies: list[EvaluateReply]) -> float | None:
    """The official score of the factories' metric values (sections, or aggregate triples); None without any."""
    sections = [s for r in replies for s in r.sections]
    triples = [v for r in replies if r.triple for v in r.triple]
    if sections:
        return float(summarize(sections)["official_score"])
    return harmonic_mean(triples) if triples else None


def _lifts(replies: list[EvaluateReply], score: float, warned: set[str]) -> dict:
    """What each factory's own values do to the score: the score without them, and the factories whose
    values lift it by more than :data:`LIFT_WARNING` (logged the first time, then added to ``warned``:
    a lie would be one of those; so is an honest factory whose machines are simply easier)."""
    without = {r.factory: _score([o for o in replies if o is not r]) for r in replies} if len(replies) > 1 else {}
    lifted = {n: score - other for n, other in without.items() if other is not None and score - other > LIFT_WARNING}
    for name, lift in lifted.items():
        if name in warned:
            continue
        warned.add(name)
        log.warning(
            "%s's self-reported metric values lift the server's official score by %.1f points (%.2f without them); "
            "the server cannot verify them (its round lines keep showing the lift)",
            name,
            100 * lift,
            100 * (score - lift),
        )
    return {"official_score_without": without, "official_score_lifted_by": lifted}


def _evaluated(entry: dict, summary: dict, what: str) -> None:
    """A round's entry gets its evaluation: the score, its basis, who lifts it, the time, the rejections."""
    entry["evaluate_seconds"] = summary["seconds"]
    if "official_score" in summary:
        entry |= {k: summary[k] for k in ("official_score", "official_score_lifted_by")}
    _merge_rejected(entry, summary["rejected"], what)


def _merge_rejected(entry: dict, rejected: dict[str, str], what: str) -> None:
    for name, reason in rejected.items():
        previous = entry["rejected"].get(name)
        entry["rejected"][name] = f"{previous}; {what}: {reason}" if previous else f"{what}: {reason}"


def no_round_aggregated(history: list[dict]) -> str | None:
    """Why a run in which no round was aggregated failed (one line), or None when some round was."""
    if any(entry["aggregated"] for entry in history):
        return None
    reasons: dict[str, list[int]] = {}
    for entry in history:
        rejected = "; ".join(f"{name}: {why}" for name, why in sorted(entry["rejected"].items()))
        reason = entry.get("not_aggregated", "too few valid updates")  # a checkpoint of an older version has none
        reasons.setdefault(reason + (f" (rejected {rejected})" if rejected else ""), []).append(entry["round"])
    why = "; ".join(f"round{'s' if len(r) > 1 else ''} {', '.join(map(str, r))}: {text}" for text, r in reasons.items())
    return f"no round was aggregated, the global model is the initial one: {why}"


def run_server(grid: Grid, settings: ServerSettings) -> dict:
    """All rounds, checkpoints and the final evaluation; writes ``federation.json`` and returns it.

    When no round was aggregated there is no final evaluation: the result is ``{"rounds", "error"}``.
    """
    cfg, fed = settings.config, settings.config.federation
    ckpt_dir = settings.run_dir / "checkpoints"
    encoder, origin = initial_encoder(cfg.model, cfg.train.seed, autoencoder=wants_autoencoder(cfg.detect))
    keys = shared_keys(encoder, fed.share)
    strategy = make_strategy(fed, settings.n_factories)
    if settings.stop is not None:
        grid = StoppableGrid(grid, settings.stop)  # type: ignore[assignment]
    private = PrivacyServer.of(cfg, settings.n_factories, grid)  # [privacy]: None = plain exchange (privacy.py)
    arrays = to_record(encoder, keys)
    if cfg.privacy.secure_aggregation:
        log.info(
            "SecAgg+: each factory uploads its masked update as one %.1f MB message "
            "(a coopasd gateway in front of the SuperLink needs --max-body-mb above that)",
            secagg_upload_mb(arrays),
        )
    identities = Identities()  # node -> factory, bound at first contact: no reply speaks for another factory
    warned: set[str] = set()  # factories already named in a lift warning
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
    for server_round in range(start_round, fed.rounds + 1):
        started = time.perf_counter()
        config = train_config(fed.lr_decay ** (server_round - 1))
        messages = list(strategy.configure_train(server_round, arrays, config, grid))
        replies, impostors = identities.check(_received(private or grid, messages, settings))
        screened = screen_train(replies, arrays.to_torch_state_dict(), fed, identities.by_node)
        good = sorted(screened.accepted, key=factory_of)  # fixed order: reproducible sums
        entry: dict = {
            "round": server_round,
            "asked": len(messages),
            "answered": len(good),
            "rejected": {},
            "bytes_down_per_factory": record_bytes(arrays),
            "bytes_up": {factory_of(m): record_bytes(m.content.array_records["arrays"]) for m in good},
            "received_hash": {factory_of(m): received_hash(m) for m in good},
            "train_seconds": {factory_of(m): reply_metric(m, "train-seconds") for m in good},
            "update_norm": screened.norms,
            "weight": screened.weights,
        }
        _merge_rejected(entry, impostors, "identity")
        _merge_rejected(entry, screened.rejected, "update")
        if private and private.halted:
            entry["not_aggregated"] = private.halted
        elif len(good) < fed.min_participants:
            entry["not_aggregated"] = (
                f"only {len(good)} of {len(messages)} factories sent a valid update (minimum {fed.min_participants})"
            )
        else:
            if private:  # [privacy]: central DP noise on the clipped updates' sum; the round's accounting record
                good, entry["privacy"] = private.aggregate_input(good, arrays)
            new_arrays, metrics = strategy.aggregate_train(server_round, good)
            if new_arrays is not None:
                arrays = new_arrays
                entry["train_loss"] = float(metrics["train-loss"]) if metrics else None
            else:
                entry["not_aggregated"] = f"the '{fed.aggregation}' rule returned no model"
        entry["aggregated"] = "not_aggregated" not in entry
        if not entry["aggregated"]:
            log.warning("round %d: %s; global model unchanged", server_round, entry["not_aggregated"])
        entry["global_hash"] = params_hash(arrays.to_torch_state_dict())[:16]
        entry["seconds"] = time.perf_counter() - started
        reported = cfg.privacy.report_metrics != "none"
        if reported and fed.evaluate_every and server_round % fed.evaluate_every == 0 and server_round < fed.rounds:
            _evaluated(entry, _evaluate(grid, arrays, server_round, False, settings, identities, warned), "metrics")
        history.append(entry)
        GlobalCheckpoint(
            server_round, arrays.to_torch_state_dict(), strategy_state(strategy), to_toml(cfg), history
        ).save(ckpt_dir, fed.keep_checkpoints)
        if settings.on_round and server_round < fed.rounds:  # the last round is reported with its final score
            settings.on_round(entry)
    unaggregated = no_round_aggregated(history)
    if unaggregated:  # nothing was learned together: no final scoring; the run fails with this reason
        if history and settings.on_round:
            settings.on_round(history[-1])
        failed = {"rounds": history, "error": unaggregated}
        write_json(settings.run_dir / FEDERATION_FILE, failed)
        return failed
    final = _evaluate(grid, arrays, fed.rounds, True, settings, identities, warned)
    if history:
        _evaluated(history[-1], final, "final metrics")
        if settings.on_round:
            settings.on_round(history[-1])
    del final["rejected"], final["seconds"]
    result = final | {
        "rounds": history,
        "encoder_start": origin,
        "shared": fed.share,
        "strategy": fed.strategy,
        "aggregation": fed.aggregation,
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
        result = run_server(grid, settings_of(context))
        if "error" in result:
            raise CoopasdError(result["error"])

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
