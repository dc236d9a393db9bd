"""The two synthetic plant families: ``dev`` (:mod:`coopasd.data.synth`, the family every design
choice was tuned on) and ``unseen`` (:mod:`coopasd.data.unseen_plant`, separately designed, for
reporting only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from coopasd.data.synth import MACHINES, SynthConfig, SynthSummary, clip_count, generate, render_clip
from coopasd.data.unseen_plant import (
    UNSEEN_MACHINES,
    UnseenPlantConfig,
    generate_unseen_plant,
    render_unseen_clip,
    unseen_clip_count,
)
from coopasd.errors import OutputError

Family = Literal["dev", "unseen"]
FAMILIES: tuple[Family, ...] = ("dev", "unseen")


def plant_config(family: Family, machines: tuple[str, ...] = (), **settings: Any) -> SynthConfig | UnseenPlantConfig:
    """The family's config with ``settings``; no ``machines`` = the family's default machine types."""
    cls = UnseenPlantConfig if family == "unseen" else SynthConfig
    return cls(machines=machines or cls.machines, **settings)  # type: ignore[arg-type]


def machine_specs(family: Family) -> Mapping[str, Any]:
    """Machine type -> its spec (``source_attrs``, ``target_attrs``, ...) in the family's generator."""
    return UNSEEN_MACHINES if family == "unseen" else MACHINES


def render_plant_clip(
    cfg: SynthConfig | UnseenPlantConfig, machine: str, split: str, domain: str, label: str, index: int
) -> tuple[np.ndarray, dict[str, str], str | None]:
    """One clip of ``cfg``'s family: waveform ``(samples,)`` float32, its attributes and anomaly kind."""
    if isinstance(cfg, UnseenPlantConfig):
        return render_unseen_clip(cfg, machine, split, domain, label, index)
    return render_clip(cfg, machine, split, domain, label, index)


def plant_clip_count(cfg: SynthConfig | UnseenPlantConfig) -> int:
    return unseen_clip_count(cfg) if isinstance(cfg, UnseenPlantConfig) else clip_count(cfg)


def generate_plant(
    cfg: SynthConfig | UnseenPlantConfig, out: Path, progress: Callable[[int], None] | None = None
) -> SynthSummary:
    """Write the plant of ``cfg``'s family to ``out`` (DCASE 2023 Task 2 layout)."""
    if Path(out).exists() and not Path(out).is_dir():
        raise OutputError(f"{out}: exists and is not a folder; give a folder for the plant")
    if isinstance(cfg, UnseenPlantConfig):
        return generate_unseen_plant(cfg, out, progress)
    return generate(cfg, out, progress)
