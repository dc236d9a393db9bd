"""The learned pipeline run three ways on the same data and seeds.

- ``centralized``: all factories' clips pooled, one encoder (the upper reference);
- ``local``: every factory trains alone from the same initial encoder (the lower reference);
- ``federated``: see :mod:`coopasd.federation` (it calls the same pieces).

After training, each factory builds memory banks of its own normal clips with its final
encoder and scores its own test clips; results go to a run directory via :mod:`coopasd.report`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from coopasd.config import DataConfig, ModelConfig, RunConfig, to_toml
from coopasd.data.audio import load_many
from coopasd.data.layout import Clip, group_by_machine_section
from coopasd.data.partition import Factory
from coopasd.evaluation import ScoredRun, SectionScores
from coopasd.model.beats import BEATs, load_beats, preset
from coopasd.model.factory import FactoryModel, clip_features, fit_detector, section_key
from coopasd.pretrain import DEFAULT_CHECKPOINT
from coopasd.report import write_run
from coopasd.train import EpochStats, make_head, steps_per_run, train_local

log = logging.getLogger(__name__)
Progress = Callable[[int], None]


@dataclass
class FactoryData:
    """One factory's clips, loaded: normal training clips and test clips."""

    factory: Factory
    train_clips: list[Clip]
    train_waves: np.ndarray
    test_clips: list[Clip]
    test_waves: np.ndarray
    skipped: list[str] = field(default_factory=list)

    @property
    def is_target(self) -> np.ndarray:
        return np.array([c.domain == "target" for c in self.train_clips], dtype=bool)


def class_name(clip: Clip) -> str:
    """The auxiliary-task class of a clip: machine type, section and attribute combination."""
    return f"{clip.machine_type}/{clip.section}/{clip.attribute_string or '-'}"


def class_labels(clips: Sequence[Clip]) -> tuple[np.ndarray, list[str]]:
    """Class ids of ``clips`` and the sorted class names they index."""
    names = sorted({class_name(c) for c in clips})
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[class_name(c)] for c in clips], dtype=np.int64), names


def load_factory_data(clips: Sequence[Clip], factory: Factory, data: DataConfig, progress: Progress | None = None):
    """Load one factory's normal training clips and its test clips (bad clips per ``data.on_error``)."""
    own = [c for c in clips if c.machine_type in factory.machine_types]
    train = [c for c in own if c.split == "train" and c.label == "normal"]
    test = [c for c in own if c.split == "test"]
    loaded_train = load_many([c.path for c in train], data.sample_rate, data.seconds, data.on_error, progress)
    loaded_test = load_many([c.path for c in test], data.sample_rate, data.seconds, data.on_error, progress)
    keep_train, keep_test = set(loaded_train.paths), set(loaded_test.paths)
    skipped = [str(e) for e in loaded_train.skipped + loaded_test.skipped]
    return FactoryData(
        factory,
        [c for c in train if c.path in keep_train],
        loaded_train.waves,
        [c for c in test if c.path in keep_test],
        loaded_test.waves,
        skipped,
    )


def initial_encoder(cfg: ModelConfig, seed: int = 0) -> tuple[BEATs, str]:
    """The starting encoder and a sentence saying where it came from (for the log and the report)."""
    if cfg.checkpoint == "pretrained":
        if not DEFAULT_CHECKPOINT.exists():
            raise FileNotFoundError(f"{DEFAULT_CHECKPOINT}: the shipped pre-trained backbone is missing")
        encoder, origin = (
            load_beats(DEFAULT_CHECKPOINT),
            f"shipped pre-trained tiny backbone ({DEFAULT_CHECKPOINT.name})",
        )
    elif cfg.checkpoint in ("", "none"):
        torch.manual_seed(seed)
        encoder = BEATs(preset(cfg.preset))
        origin = f"random initialization of the '{cfg.preset}' preset (no checkpoint: expect near-chance features)"
        log.warning("encoder starts from %s", origin)
    else:
        encoder, origin = load_beats(Path(cfg.checkpoint)), f"checkpoint {cfg.checkpoint}"
    if cfg.lora_rank:
        encoder.add_lora(cfg.lora_rank)
    return encoder, origin


def train_encoder(
    encoder: BEATs,
    datas: Sequence[FactoryData],
    cfg: RunConfig,
    progress: Progress | None = None,
    head_state: dict | None = None,
    global_params: dict[str, torch.Tensor] | None = None,
) -> tuple[dict, list[str], list[EpochStats]]:
    """Train ``encoder`` in place on the pooled clips of ``datas``; returns (head state, classes, history)."""
    clips = [c for d in datas for c in d.train_clips]
    waves = np.concatenate([d.train_waves for d in datas])
    is_target = np.concatenate([d.is_target for d in datas])
    labels, classes = class_labels(clips)
    head = make_head(encoder, len(classes), cfg.train, cfg.model.pooling)
    if head_state is not None:
        head.load_state_dict(head_state)
    history = train_local(
        encoder, head, waves, labels, is_target, cfg.train, cfg.model.pooling, cfg.model.layer, progress, global_params
    )
    return {k: v.detach().cpu() for k, v in head.state_dict().items()}, classes, history


def training_steps(datas: Sequence[FactoryData], cfg: RunConfig) -> int:
    n = sum(len(d.train_clips) for d in datas)
    return steps_per_run(n, int(sum(d.is_target.sum() for d in datas)), cfg.train)


def _sections(clips: Sequence[Clip]) -> Iterator[tuple[tuple[str, str], list[Clip], np.ndarray]]:
    """Each (machine type, section) of ``clips`` with its clips and its row mask into ``clips``."""
    for key, group in group_by_machine_section(clips).items():
        yield key, group, np.array([(c.machine_type, c.section) == key for c in clips])


def build_factory_model(
    data: FactoryData, encoder: BEATs, cfg: RunConfig, head_state: dict | None, classes: list[str], meta: dict
) -> FactoryModel:
    """Memory banks of the factory's normal clips per machine type and section, with ``encoder``."""
    features = clip_features(encoder, data.train_waves, cfg.model, cfg.detect, cfg.train.device)
    detectors = {}
    for (machine, section), _, rows in _sections(data.train_clips):
        detectors[section_key(machine, section)] = fit_detector(
            {k: v[rows] for k, v in features.items()}, data.is_target[rows], cfg.detect
        )
    return FactoryModel(
        data.factory.name, encoder, cfg.model, cfg.detect, cfg.data, detectors, classes, head_state, meta
    )


def score_factory(model: FactoryModel, data: FactoryData) -> list[SectionScores]:
    """Score the factory's own test clips, per machine type and section."""
    features = model.features(data.test_waves)
    out = []
    for (machine, section), group, rows in _sections(data.test_clips):
        det = model.detectors.get(section_key(machine, section))
        if det is None:
            log.warning(
                "%s: no training clips of %s section %s; its test clips are not scored", model.name, machine, section
            )
            continue
        scores = det.score({k: v[rows] for k, v in features.items()})
        out.append(SectionScores(machine, section, group, scores, det.decide(scores), det.threshold))
    return out


@dataclass
class ModeResult:
    """Factory models, scores and training history of one mode."""

    models: list[FactoryModel]
    run: ScoredRun
    history: dict[str, list[EpochStats]]
    origin: str


def run_centralized(datas: Sequence[FactoryData], cfg: RunConfig, train_progress: Progress | None = None) -> ModeResult:
    """One encoder trained on all factories' clips pooled (the upper reference)."""
    encoder, origin = initial_encoder(cfg.model, cfg.train.seed)
    head, classes, history = (None, [], [])
    if cfg.detect.features != "logmel":
        head, classes, history = train_encoder(encoder, datas, cfg, train_progress)
    models = [build_factory_model(d, encoder, cfg, head, classes, {"mode": "centralized"}) for d in datas]
    sections = [s for m, d in zip(models, datas, strict=True) for s in score_factory(m, d)]
    return ModeResult(models, ScoredRun(sections, [s for d in datas for s in d.skipped]), {"all": history}, origin)


def run_local(datas: Sequence[FactoryData], cfg: RunConfig, train_progress: Progress | None = None) -> ModeResult:
    """Every factory trains its own copy of the same initial encoder on its own clips only."""
    start, origin = initial_encoder(cfg.model, cfg.train.seed)
    models, history = [], {}
    for d in datas:
        encoder = copy.deepcopy(start)
        head, classes, hist = (None, [], [])
        if cfg.detect.features != "logmel":
            head, classes, hist = train_encoder(encoder, [d], cfg, train_progress)
        history[d.factory.name] = hist
        models.append(build_factory_model(d, encoder, cfg, head, classes, {"mode": "local"}))
    sections = [s for m, d in zip(models, datas, strict=True) for s in score_factory(m, d)]
    return ModeResult(models, ScoredRun(sections, [s for d in datas for s in d.skipped]), history, origin)


def history_dict(history: dict[str, list[EpochStats]]) -> dict[str, list[dict]]:
    return {k: [dataclasses.asdict(e) for e in v] for k, v in history.items()}


def load_all(
    clips: Sequence[Clip], factories: Sequence[Factory], data: DataConfig, progress: Progress | None = None
) -> list[FactoryData]:
    return [load_factory_data(clips, f, data, progress) for f in factories]


def write_mode_run(out: Path, mode: str, result: ModeResult, cfg: RunConfig, data_dir: Path) -> dict | None:
    """Run directory of one mode: submission, metrics (with training history), report, models/."""
    notes = [
        f"mode: {mode}",
        f"data: {data_dir}",
        f"encoder start: {result.origin}",
        f"detector: {cfg.detect.features} kNN (k={cfg.detect.k}), "
        f"embedding {cfg.model.pooling} of layer {cfg.model.layer}",
        "factories: " + ", ".join(f"{m.name} ({', '.join(sorted(m.detectors))})" for m in result.models),
    ]
    summary = write_run(
        out,
        result.run,
        to_toml(cfg),
        f"coopasd {mode}",
        notes,
        {"training": history_dict(result.history), "encoder_start": result.origin},
    )
    for model in result.models:
        model.save(out / "models" / f"{model.name}.pt")
    return summary
