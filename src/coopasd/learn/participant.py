"""What one factory does, whatever the mode: train its encoder, build its memory banks, score its clips.

Centralized training is the same participant holding every factory's clips; local-only is each
factory alone; federated is each factory between the server's rounds (the Flower ClientApp
calls :func:`train_round` and :func:`evaluate_round`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from coopasd.config.settings import RunConfig
from coopasd.data.dataset import FactoryData
from coopasd.data.layout import Clip, group_by_machine_section
from coopasd.dcase.evaluation import SectionScores
from coopasd.dcase.results import FactoryResult
from coopasd.detect.detectors import FactoryModel, fit_detector, require_finite_scores, section_key
from coopasd.detect.weighting import validated_weights
from coopasd.learn.autoencoder import train_frame_autoencoder
from coopasd.learn.shared_classes import fix_centres, partition_classes, shared_labels
from coopasd.learn.train import EpochStats, TrainingSet, make_head, steps_per_run, train_local
from coopasd.model.embed import clip_features, frozen_encoders
from coopasd.model.encoders import Encoder
from coopasd.model.frame_autoencoder import carried_autoencoder

log = logging.getLogger(__name__)
Progress = Callable[[int], None]

ROUND_SEED_STRIDE = 1000  # federated: round r trains with seed + r * stride + the factory's own offset
PERSONALIZE_SEED_OFFSET = 7919  # federated: the personalization epoch's seed offset


@dataclass
class TrainedHead:
    """The local margin head after training (never shared), its class names and the epochs run."""

    state: dict | None = None
    classes: list[str] = field(default_factory=list)
    history: list[EpochStats] = field(default_factory=list)


def class_name(clip: Clip) -> str:
    """The auxiliary-task class of a clip: machine type, section and attribute combination."""
    return f"{clip.machine_type}/{clip.section}/{clip.attribute_string or '-'}"


def class_labels(clips: Sequence[Clip]) -> tuple[np.ndarray, list[str]]:
    """Class ids of ``clips`` and the sorted class names they index."""
    names = sorted({class_name(c) for c in clips})
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[class_name(c)] for c in clips], dtype=np.int64), names


def factory_seed(seed: int, factory: str, offset: int) -> int:
    """A seed of this factory's own, reproducible from the run seed, the factory name and an offset."""
    return seed + offset + sum(map(ord, factory))


def train_encoder(
    encoder: Encoder,
    datas: Sequence[FactoryData],
    cfg: RunConfig,
    progress: Progress | None = None,
    head_state: dict | None = None,
    global_params: dict[str, torch.Tensor] | None = None,
) -> TrainedHead:
    """Train ``encoder`` in place on the pooled normal training clips of ``datas`` (one factory, or all)."""
    clips = [c for d in datas for c in d.train_clips]
    shared = cfg.train.class_table == "shared"  # all the partition's units, fixed centres (shared_classes.py)
    classes = partition_classes(cfg.partition.factories) if shared else []
    labels, classes = (shared_labels(clips, classes), classes) if shared else class_labels(clips)
    data = TrainingSet(
        np.concatenate([d.train_waves for d in datas]), labels, np.concatenate([d.is_target for d in datas])
    )
    head = make_head(encoder, len(classes), cfg.train, cfg.model.pooling)
    if head_state is not None:
        head.load_state_dict(head_state)
    if shared:
        fix_centres(head, cfg.train.seed)
    history = train_local(encoder, head, data, cfg.model, cfg.train, progress, global_params)
    autoencoder = carried_autoencoder(encoder)
    if autoencoder is not None:  # the ae member: the same clips, as many epochs
        train_frame_autoencoder(autoencoder, data.waves, cfg.train.epochs, cfg.train.seed, cfg.train.device)
    return TrainedHead({k: v.detach().cpu() for k, v in head.state_dict().items()}, classes, history)


def training_steps(datas: Sequence[FactoryData], cfg: RunConfig) -> int:
    """Optimizer steps of :func:`train_encoder` over ``datas`` pooled (for progress bars)."""
    n = sum(len(d.train_clips) for d in datas)
    return steps_per_run(n, int(sum(d.is_target.sum() for d in datas)), cfg.train)


def _sections(clips: Sequence[Clip]) -> Iterator[tuple[tuple[str, str], list[Clip], np.ndarray]]:
    """Each (machine type, section) of ``clips`` with its clips and its row mask into ``clips``."""
    for key, group in group_by_machine_section(clips).items():
        yield key, group, np.array([(c.machine_type, c.section) == key for c in clips])


def build_factory_model(
    data: FactoryData, encoder: Encoder, cfg: RunConfig, head: TrainedHead, meta: dict
) -> FactoryModel:
    """Memory banks of the factory's normal clips per machine type and section, with ``encoder``."""
    frozen = frozen_encoders(cfg.detect)

    def featurize(waves: np.ndarray) -> dict[str, np.ndarray]:
        return clip_features(encoder, waves, cfg.model, cfg.detect, cfg.train.device, frozen)

    features = featurize(data.train_waves)
    sections = {section_key(machine, section): rows for (machine, section), _, rows in _sections(data.train_clips)}
    weights = {}
    if cfg.detect.member_weights == "validated":
        weights = validated_weights(
            sections, data.train_waves, data.is_target, features, featurize, cfg.detect, cfg.train.seed
        )
    detectors = {
        key: fit_detector(
            {k: v[rows] for k, v in features.items()}, data.is_target[rows], cfg.detect, key, weights.get(key)
        )
        for key, rows in sections.items()
    }
    return FactoryModel(
        data.factory.name,
        encoder,
        cfg.model,
        cfg.detect,
        cfg.data,
        detectors,
        head.classes,
        head.state,
        meta,
        frozen,
        clip_samples=int(data.train_waves.shape[1]),  # what [data] seconds = 0 left them: the clips' common length
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
        require_finite_scores(scores, [c.name for c in group], f"{model.name}: {machine} section {section}")
        out.append(SectionScores(machine, section, group, scores, det.decide(scores), det.threshold))
    return out


def finish(data: FactoryData, encoder: Encoder, cfg: RunConfig, head: TrainedHead, meta: dict) -> FactoryResult:
    """Memory banks with the final encoder, then the factory's own test clips scored (each step logged)."""
    name = data.factory.name
    log.info("%s: building memory banks from %d normal training clips", name, len(data.train_clips))
    started = time.perf_counter()
    model = build_factory_model(data, encoder, cfg, head, meta)
    built = time.perf_counter() - started
    log.info("%s: scoring %d test clips (memory banks built in %.0f s)", name, len(data.test_clips), built)
    return FactoryResult(model, score_factory(model, data), list(data.skipped))


def train_round(
    encoder: Encoder,
    data: FactoryData,
    cfg: RunConfig,
    server_round: int,
    lr_scale: float,
    proximal_mu: float,
    head_state: dict | None,
    global_params: dict[str, torch.Tensor],
) -> TrainedHead:
    """Federated: ``[federation] local_epochs`` from the received global encoder, at the round's learning rate."""
    round_train = dataclasses.replace(
        cfg.train,
        epochs=cfg.federation.local_epochs,
        lr=cfg.train.lr * lr_scale,
        proximal_mu=proximal_mu,
        seed=factory_seed(cfg.train.seed, data.factory.name, ROUND_SEED_STRIDE * server_round),
    )
    return train_encoder(
        encoder, [data], dataclasses.replace(cfg, train=round_train), head_state=head_state, global_params=global_params
    )


def personalize(encoder: Encoder, data: FactoryData, cfg: RunConfig, head: TrainedHead) -> TrainedHead:
    """Federated, after the last round: a few local epochs from the final global encoder at the last round's lr."""
    fed = cfg.federation
    tuned = dataclasses.replace(
        cfg.train,
        epochs=fed.personalize_epochs,
        lr=cfg.train.lr * fed.lr_decay ** (fed.rounds - 1),
        seed=factory_seed(cfg.train.seed, data.factory.name, PERSONALIZE_SEED_OFFSET),
    )
    return train_encoder(encoder, [data], dataclasses.replace(cfg, train=tuned), head_state=head.state)


def evaluate_round(
    encoder: Encoder, data: FactoryData, cfg: RunConfig, head: TrainedHead, server_round: int, final: bool
) -> FactoryResult:
    """Federated: score own test clips with the global encoder (personalized first after the last round)."""
    if final and cfg.federation.personalize_epochs > 0:
        head = personalize(encoder, data, cfg, head)
    return finish(data, encoder, cfg, head, {"mode": "federated", "round": server_round})
