"""The pipeline run four ways on the same data and seeds; every function returns results and writes nothing.

- ``run_baseline_mode``: the non-learned floor (log-mel statistics + kNN);
- ``run_centralized``: all factories' clips pooled, one encoder (the upper reference);
- ``run_local``: every factory trains alone from the same initial encoder (the lower reference);
- ``run_federated``: factories train together through Flower (Simulation Engine); each one keeps
  its detector and scores on its own disk, and the server receives metric values only;
- ``run_comparison``: federated, centralized and local-only, one after the other.

Progress goes through a ``stage(description, total)`` context manager that yields ``advance(n)``
(the CLI passes rich progress bars; the default shows nothing).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Literal

from coopasd.config.settings import RunConfig, detector_members
from coopasd.data.dataset import FactoryData, clips_to_load, load_all
from coopasd.data.layout import Clip, check_trainable, discover_clips
from coopasd.data.partition import factories_of
from coopasd.dcase.results import MODES, Comparison, ModeResult
from coopasd.experiment.baseline import run_baseline
from coopasd.learn.participant import TrainedHead, finish, train_encoder, training_steps
from coopasd.model.embed import pick_device
from coopasd.model.encoders import initial_encoder, wants_autoencoder

log = logging.getLogger(__name__)

Advance = Callable[[int], None]
Stage = Callable[[str, int], AbstractContextManager[Advance]]
LearnedMode = Literal["centralized", "local"]


@contextmanager
def no_progress(description: str, total: int) -> Iterator[Advance]:
    """The silent :data:`Stage`."""
    yield lambda n=1: None


def _history(history: dict[str, list]) -> dict[str, list[dict]]:
    return {k: [dataclasses.asdict(e) for e in v] for k, v in history.items()}


def _learns(cfg: RunConfig) -> bool:
    """Whether the run trains anything: the encoder (``learned`` member) or the frame autoencoder (``ae``)."""
    return bool({"learned", "ae"} & set(detector_members(cfg.detect.features)))


def run_centralized(datas: Sequence[FactoryData], cfg: RunConfig, progress: Advance | None = None) -> ModeResult:
    """One encoder trained on all factories' clips pooled (the upper reference)."""
    encoder, origin = initial_encoder(cfg.model, cfg.train.seed, autoencoder=wants_autoencoder(cfg.detect))
    head = train_encoder(encoder, datas, cfg, progress) if _learns(cfg) else TrainedHead()
    factories = [finish(d, encoder, cfg, head, {"mode": "centralized"}) for d in datas]
    extra = {"training": _history({"all": head.history}), "encoder_start": origin}
    return ModeResult.of_factories("centralized", factories, extra)


def run_local(datas: Sequence[FactoryData], cfg: RunConfig, progress: Advance | None = None) -> ModeResult:
    """Every factory trains its own copy of the same initial encoder on its own clips only."""
    start, origin = initial_encoder(cfg.model, cfg.train.seed, autoencoder=wants_autoencoder(cfg.detect))
    factories, history = [], {}
    for d in datas:
        encoder = copy.deepcopy(start)
        head = train_encoder(encoder, [d], cfg, progress) if _learns(cfg) else TrainedHead()
        history[d.factory.name] = head.history
        factories.append(finish(d, encoder, cfg, head, {"mode": "local"}))
    return ModeResult.of_factories("local", factories, {"training": _history(history), "encoder_start": origin})


def _discover(data_dir: Path, cfg: RunConfig) -> tuple[list[Clip], list]:
    clips = discover_clips(data_dir)
    check_trainable(clips)
    return clips, factories_of(cfg.partition.factories, ((c.machine_type, c.section) for c in clips))


def preflight(cfg: RunConfig) -> None:
    """Settings that can only be checked here, before any clip is loaded: the device exists, and
    ``[model] layer`` / ``lora_rank`` fit the encoder (a ConfigError or CheckpointError naming them)."""
    pick_device(cfg.train.device)
    # the run itself says where its encoder starts
    initial_encoder(cfg.model, cfg.train.seed, quiet=True, autoencoder=wants_autoencoder(cfg.detect))
    if _learns(cfg) and cfg.train.epochs == 0:
        log.info("[train] epochs = 0: no fine-tuning; the encoder is used as it starts")


def run_learned_mode(mode: LearnedMode, data_dir: Path, cfg: RunConfig, stage: Stage = no_progress) -> ModeResult:
    """Discover and load every factory's clips, train in ``mode`` (centralized or local), build banks, score."""
    preflight(cfg)
    clips, factories = _discover(data_dir, cfg)
    with stage(f"{mode}: loading clips", clips_to_load(clips)) as advance:
        datas = load_all(clips, factories, cfg.data, advance)
    participants = [datas] if mode == "centralized" else [[d] for d in datas]
    steps = sum(training_steps(p, cfg) for p in participants) if _learns(cfg) else 0
    with stage(f"{mode}: training", steps) as advance:
        return (run_centralized if mode == "centralized" else run_local)(datas, cfg, advance)


def run_baseline_mode(data_dir: Path, cfg: RunConfig, stage: Stage = no_progress) -> ModeResult:
    """The non-learned floor: log-mel statistics + kNN per machine type and section."""
    clips = discover_clips(data_dir)
    check_trainable(clips)
    with stage("log-mel kNN baseline", clips_to_load(clips)) as advance:
        run = run_baseline(clips, cfg.data, cfg.baseline, advance)
    return ModeResult("baseline", run)


def run_federated(
    data_dir: Path,
    run_dir: Path,
    cfg: RunConfig,
    resume: bool = False,
    stage: Stage = no_progress,
    on_round: Callable[[dict], None] | None = None,
) -> ModeResult:
    """Factories train together with Flower's Simulation Engine; ``run_dir`` holds the server's
    checkpoints and, under ``factories/``, each simulated factory's own folder."""
    from coopasd.federation.checkpoint import completed_rounds
    from coopasd.federation.simulation import run_simulated

    preflight(cfg)
    with stage("federated rounds", cfg.federation.rounds) as advance:
        if resume:
            advance(completed_rounds(run_dir))

        def round_done(entry: dict) -> None:
            if on_round:
                on_round(entry)
            advance(1)

        server, factories = run_simulated(cfg, data_dir, run_dir, resume, round_done)
    extra = {
        "encoder_start": server["encoder_start"],
        "rounds": server["rounds"],
        "strategy": server["strategy"],
        "shared": server["shared"],
        "final_hash": server["final_hash"],
        "factories": server["factories"],
        "server_official_score": server.get("official_score"),
        "server_official_score_basis": server.get("official_score_basis"),
        "server_official_score_lifted_by": server.get("official_score_lifted_by"),
    }
    if "privacy" in server:  # [privacy]: SecAgg+ / DP and each factory's (epsilon, delta)
        extra["privacy"] = server["privacy"]
    result = ModeResult.of_factories("federated", factories, extra)
    check_server_score(server.get("official_score"), result.summary())
    return result


def check_server_score(server_score: float | None, summary: dict | None) -> None:
    """In a simulation the factories' score files are on this disk: the run's official score is computed
    from them and the labels; a server score (from self-reported metric values) that differs is a warning,
    one that agrees is logged as checked."""
    own = summary.get("official_score") if summary else None
    if server_score is None or own is None:
        return
    if abs(server_score - own) > 1e-6:
        log.warning(
            "the server's official score %.2f (self-reported by the factories) differs from %.2f, computed from "
            "their score files and the labels; the run's metrics use the latter",
            100 * server_score,
            100 * own,
        )
    else:
        log.info(
            "checked: the server's official score %.2f (self-reported by the factories) equals the one computed "
            "from their score files and the labels",
            100 * own,
        )


def run_mode(mode: str, data_dir: Path, run_dir: Path, cfg: RunConfig, stage: Stage = no_progress, **federated):
    """Any of the three modes by name (``federated`` takes ``resume`` and ``on_round``)."""
    if mode == "federated":
        return run_federated(data_dir, run_dir, cfg, stage=stage, **federated)
    if mode in ("centralized", "local"):
        return run_learned_mode(mode, data_dir, cfg, stage)  # type: ignore[arg-type]
    raise ValueError(f"unknown mode '{mode}' (expected one of {', '.join(MODES)})")


def exchange_bytes(cfg: RunConfig) -> dict[str, int]:
    """Bytes of one model transfer (one way, one factory) when sharing the full encoder vs LoRA adapters."""
    from coopasd.federation.records import transfer_bytes

    model = dataclasses.replace(cfg.model, lora_rank=0)
    encoder, _ = initial_encoder(model, cfg.train.seed, autoencoder=wants_autoencoder(cfg.detect))
    return transfer_bytes(encoder, cfg.model.lora_rank or 8)


def run_comparison(
    data_dir: Path,
    out: Path,
    cfg: RunConfig,
    stage: Stage = no_progress,
    on_mode: Callable[[ModeResult], None] | None = None,
    on_round: Callable[[dict], None] | None = None,
) -> Comparison:
    """Federated (working folder ``out/federated``), centralized and local-only on the same data and seeds.

    ``on_mode`` is called as each mode ends (the CLI writes its run directory there, so a crash
    in a later mode loses nothing already computed).
    """
    modes: dict[str, ModeResult] = {}
    for mode in MODES:
        log.info("mode: %s", mode)
        extra = {"on_round": on_round} if mode == "federated" else {}
        modes[mode] = run_mode(mode, data_dir, out / mode, cfg, stage, **extra)
        if on_mode:
            on_mode(modes[mode])
    return Comparison(modes, exchange_bytes(cfg))
