"""The pre-training corpus: procedurally generated machine kinds, disjoint from evaluation.

Each *kind* is a random recipe of sound sources (harmonic series of a rotating part, band
noise of flow or friction, periodic impacts exciting a resonance, amplitude modulation); each
kind runs in several *operating conditions* (speed and load), heard through random
microphones (gain and spectral tilt) over random plant backgrounds. Kinds come from a seed
space (``CORPUS_SEED_OFFSET`` and up) and a generator that the evaluation machines of
:mod:`coopasd.data.synth` never use, so pre-training never sees an evaluation sound.

``CorpusConfig.families`` names what the corpus draws from: ``procedural`` (the above, the default)
and the plant families ``dev`` and ``unseen`` (:mod:`coopasd.data.family_corpus`: normal training
clips of a plant seeded apart from the evaluation plants), for leave-one-family-out pre-training.
Family classes follow the procedural ones, in the order the families are named.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from coopasd.config.settings import SAMPLE_RATE
from coopasd.data.families import FAMILIES
from coopasd.data.family_corpus import family_classes, generate_family_clips
from coopasd.errors import ConfigError

CORPUS_SEED_OFFSET = 1_000_003  # every corpus seed lies above the seeds synth uses by default


@dataclass(frozen=True)
class CorpusConfig:
    """What to generate."""

    kinds: int = 48  # procedural machine kinds
    conditions: int = 4  # operating conditions per kind (the classes are kind x condition)
    clips_per_class: int = 20  # clips per (kind, condition)
    seconds: float = 1.0  # clip length
    sample_rate: int = SAMPLE_RATE  # Hz
    seed: int = 0  # corpus seed (offset by CORPUS_SEED_OFFSET)
    families: tuple[str, ...] = ("procedural",)  # sources of clips: procedural, dev, unseen (plant families)

    def __post_init__(self) -> None:
        allowed = ("procedural", *FAMILIES)
        unknown = [f for f in self.families if f not in allowed]
        if unknown or not self.families or len(set(self.families)) != len(self.families):
            raise ConfigError(
                f"corpus families must be distinct names from {', '.join(allowed)}; got {', '.join(self.families)}"
            )

    @property
    def plant_families(self) -> tuple[str, ...]:
        return tuple(f for f in self.families if f != "procedural")

    @property
    def n_procedural_classes(self) -> int:
        return self.kinds * self.conditions if "procedural" in self.families else 0

    @property
    def n_classes(self) -> int:
        return self.n_procedural_classes + sum(len(family_classes(f)) for f in self.plant_families)

    @property
    def n_clips(self) -> int:
        return self.n_classes * self.clips_per_class


def _kind_recipe(seed: int, kind: int) -> dict:
    rng = np.random.default_rng([CORPUS_SEED_OFFSET + seed, kind])
    return {
        "f0": float(rng.uniform(15, 400)),
        "harmonic_decay": float(rng.uniform(0.3, 0.9)),
        "n_harmonics": int(rng.integers(2, 12)),
        "tonal_level": float(rng.uniform(0.0, 1.5)),
        "noise_band": sorted(rng.uniform(50, 7500, 2).tolist()),
        "noise_slope": float(rng.uniform(-6, 2)),
        "noise_level": float(rng.uniform(0.1, 1.2)),
        "impact_rate": float(rng.uniform(0.5, 25)) if rng.random() < 0.5 else 0.0,
        "impact_freq": float(rng.uniform(300, 7000)),
        "impact_decay": float(rng.uniform(0.0005, 0.01)),
        "am_rate": float(rng.uniform(0.5, 30)) if rng.random() < 0.4 else 0.0,
        "am_depth": float(rng.uniform(0.1, 0.6)),
    }


def _noise(rng, n, sr, lo, hi, slope):
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    gain = ((f >= lo) & (f <= hi)) * (np.maximum(f, 1.0) / 1000.0) ** (slope / 6.02)
    x = np.fft.irfft(spec * gain, n)
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def render_corpus_clip(cfg: CorpusConfig, kind: int, condition: int, index: int) -> np.ndarray:
    """One clip ``(samples,)`` float32 of ``kind`` in ``condition``."""
    r = _kind_recipe(cfg.seed, kind)
    rng = np.random.default_rng([CORPUS_SEED_OFFSET + cfg.seed, kind, condition, index])
    sr, n = cfg.sample_rate, int(cfg.seconds * cfg.sample_rate)
    t = np.arange(n) / sr
    speed = (1.0 + 0.25 * condition) * (1 + 0.015 * rng.uniform(-1, 1))
    load = 0.6 + 0.3 * ((condition * 7) % cfg.conditions) / max(1, cfg.conditions - 1)
    f0 = r["f0"] * speed
    x = np.zeros(n)
    phase = 2 * np.pi * f0 * t + rng.uniform(0, 6.3)
    for h in range(1, r["n_harmonics"] + 1):
        if h * f0 < sr / 2:
            x += r["tonal_level"] * r["harmonic_decay"] ** (h - 1) * np.sin(h * phase + rng.uniform(0, 6.3))
    lo, hi = r["noise_band"]
    x += r["noise_level"] * load * _noise(rng, n, sr, lo, max(hi, lo * 1.2), r["noise_slope"])
    if r["impact_rate"]:
        period = 1 / (r["impact_rate"] * speed)
        length = int(r["impact_decay"] * 6 * sr)
        tau = np.arange(length) / sr
        kernel = np.exp(-tau / r["impact_decay"]) * np.sin(2 * np.pi * r["impact_freq"] * tau)
        for t0 in np.arange(rng.uniform(0, period), n / sr, period):
            i = int(t0 * sr)
            seg = kernel[: n - i]
            x[i : i + len(seg)] += load * seg
    if r["am_rate"]:
        x *= 1 + r["am_depth"] * np.sin(2 * np.pi * r["am_rate"] * speed * t)
    x /= np.sqrt(np.mean(x**2)) + 1e-12
    tilt = rng.uniform(-3, 3)  # microphone
    x = _noise_mix(x, rng, sr, tilt)
    return (x * 0.1 * 10 ** (rng.uniform(-6, 6) / 20)).astype(np.float32)


def _noise_mix(x: np.ndarray, rng, sr: int, tilt: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / sr)
    spec *= (np.maximum(f, 50.0) / 1000.0) ** (tilt / 6.02)
    y = np.fft.irfft(spec, len(x))
    y /= np.sqrt(np.mean(y**2)) + 1e-12
    background = _noise(rng, len(x), sr, 20, sr / 2, rng.uniform(-6, 0))
    return y + rng.uniform(0.02, 0.3) * background


def generate_corpus(cfg: CorpusConfig, progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All clips ``(n, samples)`` and their class ids ``(n,)``: procedural ``kind * conditions + condition``
    first, then each plant family's classes (offset by the classes before them)."""
    waves, labels = [], []
    if "procedural" in cfg.families:
        for kind in range(cfg.kinds):
            for condition in range(cfg.conditions):
                for index in range(cfg.clips_per_class):
                    waves.append(render_corpus_clip(cfg, kind, condition, index))
                    labels.append(kind * cfg.conditions + condition)
                if progress:
                    progress(cfg.clips_per_class)
    parts, offset = [(np.stack(waves), np.array(labels))] if waves else [], cfg.n_procedural_classes
    for family in cfg.plant_families:
        family_waves, family_labels = generate_family_clips(
            family, cfg.clips_per_class, cfg.seed, cfg.seconds, cfg.sample_rate, progress
        )
        parts.append((family_waves, family_labels + offset))
        offset += len(family_classes(family))
    return np.concatenate([w for w, _ in parts]), np.concatenate([y for _, y in parts])
