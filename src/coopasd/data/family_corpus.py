"""Plant-family clips for the pre-training corpus (leave-one-family-out pre-training runs).

A plant family (``dev``: :mod:`coopasd.data.synth`, ``unseen``: :mod:`coopasd.data.unseen_plant`)
joins the corpus with its own generator, but from plants seeded ``FAMILY_SEED_OFFSET + corpus seed``
(the evaluation plants use seed 0, so no evaluation clip is ever rendered here) and with NORMAL
TRAINING clips only (split ``train``, label ``normal``; never a test clip, never an anomaly). Clips
are rendered at the corpus's length and rate. A class is (machine type, attribute combination), the
family's counterpart of the procedural kind x condition: every combination the source domain uses
and every one the target domain uses, ``clips_per_class`` clips each (the same weight per class as a
procedural class).

Neither generator draws machine parameters from the seed: a family's machine types, physics and
attribute values are fixed, and the seed changes every clip's randomness (speed jitter, phases,
noise, and in ``unseen`` the room, microphone and background). In-family pre-training therefore hears
the evaluated machines (fresh clips of them); leaving the family out is what tests transfer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from coopasd.data.families import FAMILIES, machine_specs, plant_config, render_plant_clip
from coopasd.errors import ConfigError

FAMILY_SEED_OFFSET = 1000  # a family's corpus plant is seeded FAMILY_SEED_OFFSET + corpus seed (evaluation: 0)
FamilyClass = tuple[str, str, tuple[tuple[str, str], ...]]  # (machine, domain, ((attribute, value), ...))


def _combinations(options) -> list[tuple[tuple[str, str], ...]]:
    keys, values = zip(*dict(options).items(), strict=True)  # synth: a dict; unseen: (key, values) pairs
    return [tuple(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def family_classes(family: str) -> list[FamilyClass]:
    """The family's classes in label order: per machine type, the source then the target attribute combinations."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown plant family {family!r}; choose from {', '.join(FAMILIES)}")
    specs = machine_specs(family)
    classes: list[FamilyClass] = []
    for machine in plant_config(family).machines:  # the family's default machine types
        spec = specs[machine]
        for domain, options in (("source", spec.source_attrs), ("target", spec.target_attrs)):
            classes += [(machine, domain, combo) for combo in _combinations(options)]
    return classes


def family_plant_seed(corpus_seed: int) -> int:
    """The seed of a family's corpus plant (never 0, the evaluation plants' seed, for corpus seeds >= 0)."""
    return FAMILY_SEED_OFFSET + corpus_seed


def generator_module(family: str) -> str:
    """The module that generates the family's plants (for a checkpoint's record)."""
    return type(plant_config(family)).__module__


def generate_family_clips(
    family: str,
    clips_per_class: int,
    corpus_seed: int,
    seconds: float,
    sample_rate: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The family's corpus clips ``(n, samples)`` float32 and class ids ``(n,)`` (:func:`family_classes` order).

    Normal training clips ``index = 0, 1, ...`` of each machine and domain are rendered from the plant
    seeded :func:`family_plant_seed`; each fills its (machine, attributes) class until the class has
    ``clips_per_class`` (the attributes are the generator's own draw, so a few clips are skipped).
    """
    classes = family_classes(family)
    index_of = {(m, combo): i for i, (m, _d, combo) in enumerate(classes)}
    plant = plant_config(family, seed=family_plant_seed(corpus_seed), seconds=seconds, sample_rate=sample_rate)
    waves: list[list[np.ndarray]] = [[] for _ in classes]
    for machine, domain in dict.fromkeys((m, d) for m, d, _ in classes):
        wanted = [i for i, (m, d, _c) in enumerate(classes) if (m, d) == (machine, domain)]
        index, limit = 0, 200 * clips_per_class * len(wanted)
        while any(len(waves[i]) < clips_per_class for i in wanted):
            if index >= limit:
                raise ConfigError(f"{family} plant: {machine}/{domain} did not fill its attribute classes")
            wave, attrs, _ = render_plant_clip(plant, machine, "train", domain, "normal", index)
            label = index_of[(machine, tuple(attrs.items()))]
            if len(waves[label]) < clips_per_class:
                waves[label].append(wave)
                if progress:
                    progress(1)
            index += 1
    labels = np.repeat(np.arange(len(classes)), clips_per_class)
    return np.stack([w for per_class in waves for w in per_class]), labels
