"""Scoring one clip with a factory's saved model: the one code path of ``coopasd score`` and ``coopasd serve``.

Both commands load audio with :mod:`coopasd.data.audio` (a file, or an upload's bytes, through
the same checks and clip rule), pick the machine type and section with :func:`resolve_section`
and score with :func:`score_wave`, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from coopasd.data.layout import parse_clip_path
from coopasd.detect import FactoryModel, require_finite_scores  # the only import of the saved model's class
from coopasd.errors import LayoutError, SectionError

__all__ = ["ClipScore", "FactoryModel", "load_model", "resolve_section", "score_wave", "sections"]


@dataclass(frozen=True)
class ClipScore:
    """One clip's anomaly score, its 0/1 decision (1 = anomalous) and the section's threshold."""

    score: float
    decision: int
    threshold: float
    machine_type: str
    section: str

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def load_model(path: Path) -> FactoryModel:
    """A factory's saved detector (``RUN_DIR/models/<factory>.pt``)."""
    return FactoryModel.load(Path(path))


def sections(model: FactoryModel) -> list[str]:
    """The ``machine/section`` keys the model has a detector for, sorted."""
    return sorted(model.detectors)


def _name_hint(name_hint: Path | str | None) -> tuple[str | None, str | None]:
    """Machine type (from a ``<machine>/<split>/`` folder) and section (from a DCASE file name), if they show."""
    if not name_hint:
        return None, None
    path = Path(name_hint)
    for split in dict.fromkeys((path.parent.name, "test", "train")):  # the folder's split first, then the name's
        try:
            clip = parse_clip_path(path, path.parent.parent.name, split)
        except LayoutError:
            continue
        return clip.machine_type or None, clip.section
    return None, None


def resolve_section(
    model: FactoryModel, name_hint: Path | str | None, machine: str | None = None, section: str | None = None
) -> tuple[str, str]:
    """Machine type and section of a clip: the given ones, else what its DCASE path shows, else the only match.

    ``name_hint`` is the clip's path or upload name. Raises :class:`SectionError` when the model has
    no detector for the result or several detectors fit.
    """
    known = ", ".join(sections(model))
    label = str(name_hint) if name_hint else "clip"
    if machine and section:
        if f"{machine}/{section}" not in model.detectors:
            raise SectionError(f"{label}: the model has no detector for {machine}/{section}; it knows {known}")
        return machine, section
    hint_machine, hint_section = _name_hint(name_hint)
    guess_machine, guess_section = machine or hint_machine, section or hint_section
    if guess_machine and guess_section and f"{guess_machine}/{guess_section}" in model.detectors:
        return guess_machine, guess_section
    candidates = [
        k
        for k in model.detectors
        if (machine is None or k.startswith(machine + "/")) and (section is None or k.endswith("/" + section))
    ]
    if len(candidates) == 1:
        found_machine, found_section = candidates[0].split("/")
        return found_machine, found_section
    if not candidates:
        asked = " ".join(f"{n} '{v}'" for n, v in (("machine type", machine), ("section", section)) if v)
        raise SectionError(f"{label}: the model has no detector for {asked}; it knows {known}")
    raise SectionError(
        f"{label}: cannot tell which machine type and section it is; give both (the model knows {known})"
    )


def score_wave(model: FactoryModel, wave: np.ndarray, machine: str, section: str, name: str = "clip") -> ClipScore:
    """Score one loaded clip ``(samples,)`` (see :func:`coopasd.data.audio.load_audio`) of a known section.

    ``name`` is what errors call the clip. A score that is not a finite number raises :class:`ScoreError`:
    it is never reported as a verdict.
    """
    key = f"{machine}/{section}"
    if key not in model.detectors:
        raise SectionError(f"{name}: the model has no detector for {key}; it knows {', '.join(sections(model))}")
    scores, decisions = model.score(wave[np.newaxis], machine, section)
    require_finite_scores(scores, [str(name)], f"factory model '{model.name}', {key}")
    threshold = float(model.detectors[key].threshold)
    return ClipScore(float(scores[0]), int(decisions[0]), threshold, machine, section)
