"""The Flower ServerApp: rounds of configure -> local training -> validated aggregation,
a global checkpoint per round, per-round federated evaluation, and the final scoring round.

The server sees parameters and metric values only: never audio, features or embeddings. It
believes none of it unchecked: every reply is screened (:mod:`coopasd.federation.strategy`) and
each rejected one is logged and recorded in the round's ``rejected`` ({factory: reason}).
With ``[privacy]`` the exchange and the aggregate go through :mod:`coopasd.federation.privacy`: under
SecAgg+ the server holds only the sum, so the robust rule sees that sum (clipping, with DP, is what
bounds one factory's influence there).
"""

from __future__ import annotations

import logging
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
from coopasd.federation.privacy import PrivacyServer
from coopasd.federation.records import (
    evaluate_content,
    factory_of,
    received_hash,
    record_bytes,
    reply_metric,
    shared_keys,
    to_record,
    train_config,
)
from coopasd.federation.strategy import (
    make_strategy,
    restore_strategy_state,
    screen_evaluate,
    screen_train,
    strategy_state,
)
from coopasd.model.encoders import initial_encoder
from coopasd.rundir.writer import FEDERATION_FILE, write_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """The run's settings and where the server keeps its checkpoints and results."""

    config: RunConfig
    run_dir: Path
    n_factories: int
    resume: bool = False
    on_round: Callable[[dict], None] | None = None  # progress hook (the CLI's progress bar)
    on_reply: Callable[[Message], None] | None = None  # audit hook: every reply as received, before screening


def _received(grid: Grid | PrivacyServer, messages: list[Message], settings: ServerSettings) -> list[Message]:
    """Send and wait for the replies; each one goes to the audit hook as it arrived."""
    replies = list(grid.send_and_receive(messages, timeout=settings.config.federation.round_timeout))
    for reply in replies:
        if settings.on_reply is not None:
            settings.on_reply(reply)
    return replies


def _evaluate(grid: Grid, arrays: ArrayRecord, server_round: int, final: bool, settings: ServerSettings) -> dict:
    """Ask every factory to score its own test clips; the summary of the valid metric values, the
    factories that sent them and ``rejected`` ({factory: reason})."""
    messages = [
        Message(evaluate_content(arrays, server_round, final), dst_node_id=n, message_type=MessageType.EVALUATE)
        for n in grid.get_node_ids()
    ]
    replies = _received(grid, messages, settings)
    accepted, rejected = screen_evaluate(replies, settings.config.privacy.report_metrics)
    summary: dict = {"factories": [r.factory for r in accepted], "rejected": rejected}
    sections = [s for r in accepted for s in r.sections]
    triples = [v for r in accepted if r.triple for v in r.triple]
    if sections:
        summary |= summarize(sections)
    elif triples:
        summary["official_score"] = harmonic_mean(triples)
    return summary


def _merge_rejected(entry: dict, rejected: dict[str, str], what: str) -> None:
    for name, reason in rejected.items():
        previous = entry["rejected"].get(name)
        entry["rejected"][name] = f"{previous}; {what}: {reason}" if previous else f"{what}: {reason}"


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
    for server_round in range(start_round, fed.rounds + 1):
        started = time.perf_counter()
        config = train_config(fed.lr_decay ** (server_round - 1))
        messages = list(strategy.configure_train(server_round, arrays, config, grid))
        replies = _received(private or grid, messages, settings)
        screened = screen_train(replies, arrays.to_torch_state_dict(), fed)
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
        _merge_rejected(entry, screened.rejected, "update")
        if len(good) < fed.min_participants:
            log.warning(
                "round %d: only %d of %d factories sent a valid update (minimum %d); global model unchanged",
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
        reported = cfg.privacy.report_metrics != "none"
        if reported and fed.evaluate_every and server_round % fed.evaluate_every == 0 and server_round < fed.rounds:
            summary = _evaluate(grid, arrays, server_round, False, settings)
            entry["official_score"] = summary.get("official_score")
            _merge_rejected(entry, summary["rejected"], "metrics")
        history.append(entry)
        GlobalCheckpoint(
            server_round, arrays.to_torch_state_dict(), strategy_state(strategy), to_toml(cfg), history
        ).save(ckpt_dir, fed.keep_checkpoints)
        if settings.on_round and server_round < fed.rounds:  # the last round is reported with its final score
            settings.on_round(entry)
    final = _evaluate(grid, arrays, fed.rounds, True, settings)
    if history and "official_score" in final:
        history[-1]["official_score"] = final["official_score"]
    rejected = final.pop("rejected")
    if history:
        _merge_rejected(history[-1], rejected, "final metrics")
        if settings.on_round:
            settings.on_round(history[-1])
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
