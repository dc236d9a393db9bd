"""Scoring one clip with a factory's saved model: the one code path of ``coopasd score`` and ``coopasd serve``.

Both commands load audio with :mod:`coopasd.data.audio` (a file, or an upload's bytes, through
the same checks), pick the machine type and section with :func:`resolve_section` and score with
:func:`score_wave`, so they cannot disagree. A clip is scored the way the model's run saw clips
(:func:`fit_to_model`): brought to the length of the clips its memory banks hold (the model's
``clip_seconds``; a longer clip keeps its first seconds, a shorter one is tiled), so a clip's score
does not depend on how long the file is and equals the one in that run's submission files. A clip
shorter than :data:`MIN_CLIP_SHARE` of that length is refused: tiled more than that, it is a
different sound. A clip whose DCASE path names a machine type or section the model has no
detector for is refused, never scored by another section's detector.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from coopasd.data.audio import fix_length, load_audio
from coopasd.data.layout import SPLITS, parse_clip_path
from coopasd.detect.detectors import FactoryModel, require_finite_scores  # the only import of the saved model's class
from coopasd.errors import AudioError, LayoutError, SectionError

__all__ = [
    "ClipScore",
    "FactoryModel",
    "FileScore",
    "MIN_CLIP_SHARE",
    "fit_to_model",
    "load_model",
    "resolve_section",
    "score_file",
    "score_wave",
    "sections",
]


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


MIN_CLIP_SHARE = 0.25  # shortest clip scored, as a share of the model's clip length (tiled at most 4 times)


def load_model(path: Path) -> FactoryModel:
    """A factory's saved detector (``RUN_DIR/models/<factory>.pt``)."""
    return FactoryModel.load(Path(path))


def fit_to_model(model: FactoryModel, wave: np.ndarray, name: Path | str = "clip") -> np.ndarray:
    """``wave`` ``(samples,)`` at the model's rate brought to the model's clip length, as its run did.

    Raises :class:`AudioError` naming ``name`` when the clip is shorter than :data:`MIN_CLIP_SHARE`
    of that length; :class:`CheckpointError` when the model file does not record its clip length.
    """
    rate, length = model.data_cfg.sample_rate, model.clip_length()
    shortest = int(np.ceil(MIN_CLIP_SHARE * length))
    if wave.shape[0] < shortest:
        raise AudioError(
            name,
            f"clip lasts {wave.shape[0] / rate:.4g} s ({wave.shape[0]} samples at {rate} Hz); the model scores "
            f"{length / rate:g} s clips and accepts clips from {shortest / rate:.4g} s on (shorter ones would be "
            f"repeated more than {1 / MIN_CLIP_SHARE:g} times)",
        )
    return fix_length(wave, length)


def sections(model: FactoryModel) -> list[str]:
    """The ``machine/section`` keys the model has a detector for, sorted."""
    return sorted(model.detectors)


def _name_hint(name_hint: Path | str | None) -> tuple[str | None, str | None]:
    """Machine type (from a ``<machine>/<train|test>/`` folder) and section (from a DCASE file name), if they show."""
    if not name_hint:
        return None, None
    path = Path(name_hint)
    in_split = path.parent.name in SPLITS
    for split in dict.fromkeys((path.parent.name if in_split else "test", "test", "train")):
        try:
            clip = parse_clip_path(path, path.parent.parent.name if in_split else "", split)
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
    if machine and section and f"{machine}/{section}" not in model.detectors:
        raise SectionError(f"{label}: the model has no detector for {machine}/{section}; it knows {known}")
    hint_machine, hint_section = _name_hint(name_hint)
    for what, given, shown in (("machine type", machine, hint_machine), ("section", section, hint_section)):
        if given and shown and given != shown:
            raise SectionError(f"{label}: its name says {what} '{shown}', but {what} '{given}' was given")
    shown_key = f"{hint_machine or '*'}/{hint_section or '*'}"
    if (hint_machine or hint_section) and not any(
        (hint_machine in (None, k.split("/")[0])) and (hint_section in (None, k.split("/")[1])) for k in model.detectors
    ):
        raise SectionError(
            f"{label}: its name says {shown_key}, which factory model '{model.name}' has no detector for; "
            f"it knows {known}"
        )
    if machine and section:
        return machine, section
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


@dataclass(frozen=True)
class FileScore:
    """One audio file's score, with the file's own length and the length the model scored."""

    clip: str
    result: ClipScore
    clip_seconds: float  # the file's length
    scored_seconds: float  # the model's clip length (longer files cut to it, shorter ones tiled)

    def to_dict(self) -> dict[str, float | int | str]:
        """Flat record: clip, score, decision, threshold, machine_type, section, clip_seconds, scored_seconds."""
        clip, lengths = {"clip": self.clip}, {"clip_seconds": self.clip_seconds, "scored_seconds": self.scored_seconds}
        return clip | self.result.to_dict() | lengths


def score_file(model: FactoryModel, path: Path, machine: str | None = None, section: str | None = None) -> FileScore:
    """Score one audio file as :func:`score_wave` does after :func:`coopasd.data.audio.load_audio` with the
    model's data config (the same score), and report the file's length beside the length scored."""
    path = Path(path).absolute()
    found_machine, found_section = resolve_section(model, path, machine, section)
    rate = model.data_cfg.sample_rate
    wave = load_audio(path, rate, None)  # native length, at the model's rate
    scored = fit_to_model(model, wave, path)
    result = score_wave(model, scored, found_machine, found_section, name=str(path))
    return FileScore(str(path), result, round(wave.shape[0] / rate, 4), model.clip_seconds)


def scores_text(rows: Sequence[FileScore], fmt: str) -> str:
    """``rows`` as JSON (a list of :meth:`FileScore.to_dict` records) or CSV (a header, then one line per clip)."""
    records = [r.to_dict() for r in rows]
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]) if records else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def scores_table(rows: Sequence[FileScore], factory: str):
    """``rows`` as a rich table (whole clip names, folded), the length note as its caption."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(f"factory '{factory}'"), caption=Text(length_note(rows)))
    for name in ("clip", "machine/section", "score", "threshold", "decision"):
        table.add_column(name, justify="right" if name in ("score", "threshold") else "left", overflow="fold")
    for r in rows:
        verdict = Text("anomalous", style="red") if r.result.decision else Text("normal")
        where, values = f"{r.result.machine_type}/{r.result.section}", (r.result.score, r.result.threshold)
        table.add_row(Text(r.clip), where, *(f"{v:.4f}" for v in values), verdict)
    return table


def length_note(rows: Sequence[FileScore]) -> str:
    """A sentence saying that clips were cut or tiled to the model's length ("" where none was)."""
    longer = sum(r.clip_seconds > r.scored_seconds for r in rows)
    shorter = sum(r.clip_seconds < r.scored_seconds for r in rows)
    if not (longer or shorter):
        return ""
    seconds = rows[0].scored_seconds
    return (
        f"the model scores {seconds:g} s per clip (the length of its run's clips): {longer} clip(s) longer, "
        f"of which only the first {seconds:g} s were scored; {shorter} shorter, tiled to {seconds:g} s"
    )
