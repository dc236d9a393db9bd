"""The two synthetic plant families: ``dev`` (:mod:`coopasd.data.synth`, the family every design
choice was tuned on) and ``unseen`` (:mod:`coopasd.data.unseen_plant`, separately designed, for
reporting only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from coopasd.data.synth import SynthConfig, SynthSummary, clip_count, generate
from coopasd.data.unseen_plant import UnseenPlantConfig, generate_unseen_plant, unseen_clip_count
from coopasd.errors import OutputError

Family = Literal["dev", "unseen"]
FAMILIES: tuple[Family, ...] = ("dev", "unseen")


def plant_config(family: Family, machines: tuple[str, ...] = (), **settings: Any) -> SynthConfig | UnseenPlantConfig:
    """The family's config with ``settings``; no ``machines`` = the family's default machine types."""
    cls = UnseenPlantConfig if family == "unseen" else SynthConfig
    return cls(machines=machines or cls.machines, **settings)  # type: ignore[arg-type]


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
