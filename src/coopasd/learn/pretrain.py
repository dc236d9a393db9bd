"""Pre-training the ``tiny`` backbone on the procedural corpus (``coopasd pretrain``).

Objective: ArcFace classification of (machine kind, operating condition) plus the generic
pseudo-anomaly classes of :mod:`coopasd.data.augment`, so the encoder learns both what separates
machines and conditions and the small spectral changes that faults make. The result is our
checkpoint format (``cfg`` + ``model`` + ``meta``), loadable by
:func:`coopasd.model.checkpoint.load_beats`; :func:`coopasd.rundir.writer.write_pretrained` writes it.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from coopasd.config.settings import ModelConfig, TrainConfig
from coopasd.data.corpus import CorpusConfig, generate_corpus
from coopasd.data.family_corpus import family_classes, family_plant_seed, generator_module
from coopasd.learn.train import TrainingSet, make_head, steps_per_run, train_local
from coopasd.model.beats import BEATs, Pooling
from coopasd.model.beats_config import preset
from coopasd.model.checkpoint import checkpoint_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """Corpus and training of the shipped backbone."""

    preset: str = "tiny"  # BEATs preset to pre-train
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=12, batch_size=32, lr=1e-3, target_fraction=0.0, crop_seconds=0.0)
    )
    pooling: Pooling = "mean_freq"  # embedding the head classifies
    layer: int = -1  # layer whose output is pooled during pre-training
    half_precision: bool = True  # store float16 weights (half the file; loaded back as float32)

    @classmethod
    def of(
        cls,
        preset: str,
        kinds: int,
        clips: int,
        epochs: int,
        seed: int,
        device: str,
        families: tuple[str, ...] = ("procedural",),
    ) -> PretrainConfig:
        """The ``coopasd pretrain`` options as a config (the other settings at their defaults)."""
        train = dataclasses.replace(cls().train, epochs=epochs, seed=seed, device=device)
        corpus = CorpusConfig(kinds=kinds, clips_per_class=clips, seed=seed, families=families)
        return cls(preset=preset, corpus=corpus, train=train)


def pretrain(
    cfg: PretrainConfig,
    command: str = "",
    corpus_progress: Callable[[int], None] | None = None,
    train_progress: Callable[[int], None] | None = None,
) -> tuple[bytes, dict]:
    """Generate the corpus and train; returns the checkpoint file's bytes and its record (metadata)."""
    start = time.time()
    waves, labels = generate_corpus(cfg.corpus, corpus_progress)
    torch.manual_seed(cfg.train.seed)
    encoder = BEATs(preset(cfg.preset))
    head = make_head(encoder, cfg.corpus.n_classes, cfg.train, cfg.pooling)
    data = TrainingSet(waves, labels, np.zeros(len(labels), dtype=bool))
    model_cfg = ModelConfig(preset=cfg.preset, checkpoint="none", pooling=cfg.pooling, layer=cfg.layer)  # type: ignore[arg-type]
    history = train_local(encoder, head, data, model_cfg, cfg.train, train_progress)
    state = encoder.state_dict()
    if cfg.half_precision:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta = {
        "command": command,
        "preset": cfg.preset,
        "corpus": dataclasses.asdict(cfg.corpus)
        | {"generator": "coopasd.data.corpus", "clips": cfg.corpus.n_clips}
        | ({"plants": _plant_record(cfg.corpus)} if cfg.corpus.plant_families else {}),
        "train": dataclasses.asdict(cfg.train),
        "objective": "ArcFace over kind x condition classes + pseudo-anomaly classes"
        + (" + plant (machine type x attributes) classes" if cfg.corpus.plant_families else ""),
        "final_accuracy": history[-1].accuracy,
        "history": [dataclasses.asdict(h) for h in history],
        "seconds": round(time.time() - start, 1),
        "torch": str(torch.__version__),
        "machine": platform.machine(),
        "dtype": "float16" if cfg.half_precision else "float32",
    }
    return checkpoint_bytes(encoder.cfg.to_dict(), state, meta), meta


def _plant_record(corpus: CorpusConfig) -> dict[str, dict]:
    """What each plant family added to the corpus (for the checkpoint's record)."""
    return {
        family: {
            "generator": generator_module(family),
            "plant_seed": family_plant_seed(corpus.seed),
            "clips": "normal training clips only",
            "classes": len(family_classes(family)),
            "n_clips": len(family_classes(family)) * corpus.clips_per_class,
        }
        for family in corpus.plant_families
    }


def pretrain_steps(cfg: PretrainConfig) -> int:
    return steps_per_run(cfg.corpus.n_clips, 0, cfg.train)
