"""From DCASE submission files and a data tree's labels to metrics (what ``coopasd evaluate`` does)."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coopasd.data.layout import Clip, group_by_machine_section
from coopasd.dcase.metrics import SectionMetrics, section_metrics
from coopasd.errors import SubmissionError

_SCORE_FILE = re.compile(r"^anomaly_score_(?P<machine>.+)_section_(?P<section>\d{2})_test\.csv$")


@dataclass
class SectionScores:
    """Anomaly scores and 0/1 decisions (None where a submission has no decision file) of the test
    clips of one machine type and section."""

    machine_type: str
    section: str
    clips: list[Clip]
    scores: np.ndarray
    decisions: np.ndarray | None
    threshold: float

    @property
    def evaluable(self) -> bool:
        return bool(self.clips) and not any(c.labels_hidden for c in self.clips)

    def metrics(self) -> SectionMetrics:
        return section_metrics(
            self.machine_type,
            self.section,
            self.scores,
            [c.label == "anomaly" for c in self.clips],
            [c.domain or "" for c in self.clips],
            decisions=self.decisions,
        )


@dataclass
class ScoredRun:
    """All sections' scores, plus the clips that were skipped as unreadable."""

    sections: list[SectionScores]
    skipped: list[str]

    def section_metrics(self) -> list[SectionMetrics]:
        """Metrics of every section whose labels are known (hidden-label sections are left out)."""
        return [s.metrics() for s in self.sections if s.evaluable]


def score_file_name(machine_type: str, section: str) -> str:
    return f"anomaly_score_{machine_type}_section_{section}_test.csv"


def decision_file_name(machine_type: str, section: str) -> str:
    return f"decision_result_{machine_type}_section_{section}_test.csv"


def read_score_file(path: Path) -> dict[str, float]:
    """``file_name,score`` rows (no header, as DCASE writes them) -> {file name: score}.

    A row that is not ``name,number``, a non-finite score and a clip listed twice are errors naming the line.
    """
    scores: dict[str, float] = {}
    lines: dict[str, int] = {}
    try:
        with open(path, newline="") as handle:
            for line_no, row in enumerate(csv.reader(handle), start=1):
                if not row:
                    continue
                if len(row) < 2:
                    raise SubmissionError(f"{path}: line {line_no}: expected 'file_name,score'")
                try:
                    value = float(row[1])
                except ValueError as err:
                    raise SubmissionError(f"{path}: line {line_no}: score {row[1]!r} is not a number") from err
                if not np.isfinite(value):
                    raise SubmissionError(f"{path}: line {line_no}: score is {row[1]}")
                name = Path(row[0]).name
                if name in lines:
                    raise SubmissionError(f"{path}: line {line_no}: {name} is listed twice (also line {lines[name]})")
                scores[name], lines[name] = value, line_no
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SubmissionError(f"{path}: cannot read ({err})") from err
    return scores


def _read_decisions(path: Path, test: Sequence[Clip]) -> np.ndarray:
    """The 0/1 decisions of ``test``'s clips from a decision file that lists exactly those clips."""
    decisions = read_score_file(path)
    _check_rows(path, decisions, test, "decision")
    odd = next((name for name, value in decisions.items() if value not in (0.0, 1.0)), None)
    if odd is not None:
        raise SubmissionError(f"{path}: decision of {odd} is {decisions[odd]:g}; expected 0 or 1")
    return np.array([int(decisions[c.name]) for c in test])


def _check_rows(path: Path, rows: dict[str, float], test: Sequence[Clip], what: str = "score") -> None:
    """Refuse a file that leaves out a test clip of its section or lists a clip the section does not have."""
    missing = [c.name for c in test if c.name not in rows]
    if missing:
        raise SubmissionError(f"{path}: no {what} for {len(missing)} test clip(s), e.g. {missing[0]}")
    extra = sorted(set(rows) - {c.name for c in test})
    if extra:
        raise SubmissionError(f"{path}: {len(extra)} row(s) for clips the section has not, e.g. {extra[0]}")


def read_submission(submission_dir: Path, clips: Sequence[Clip], require_all: bool = True) -> ScoredRun:
    """Scores (and decisions, where present) of every section with a score file in ``submission_dir``.

    With ``require_all`` (what ``coopasd evaluate`` needs) the submission must be complete and
    consistent: a score file for every test section of ``clips``, exactly one row per test clip, and
    decision files for all sections or none, each listing the same clips with 0 or 1; anything else
    is an error naming the file. Without it, sections without a score file and clips without a score
    (skipped as unreadable) are left out.
    """
    submission_dir = Path(submission_dir)
    files = sorted(p for p in submission_dir.glob("anomaly_score_*_test.csv") if _SCORE_FILE.match(p.name))
    if not files:
        raise SubmissionError(f"{submission_dir}: no anomaly_score_<machine>_section_XX_test.csv files")
    groups = group_by_machine_section(c for c in clips if c.split == "test")
    if require_all:
        _check_files(submission_dir, files, groups)
    sections: list[SectionScores] = []
    for path in files:
        machine, section = _key(path)
        test = groups.get((machine, section))
        if not test:
            raise SubmissionError(f"{path}: the data tree has no test clips of {machine} section {section}")
        scores = read_score_file(path)
        if require_all:
            _check_rows(path, scores, test)
        else:
            test = [c for c in test if c.name in scores]
        decision_path = path.with_name(decision_file_name(machine, section))
        decisions = _read_decisions(decision_path, test) if decision_path.exists() else None
        scored = np.array([scores[c.name] for c in test])
        sections.append(SectionScores(machine, section, list(test), scored, decisions, float("nan")))
    return ScoredRun(sections, [])


def _check_files(submission_dir: Path, files: Sequence[Path], groups: dict[tuple[str, str], list[Clip]]) -> None:
    """Every test section of the data has its score file; decision files for all sections or for none."""
    missing = [key for key in sorted(groups) if not (submission_dir / score_file_name(*key)).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise SubmissionError(
            f"{submission_dir / score_file_name(*missing[0])}: missing{more}; the data tree has test clips of "
            f"{missing[0][0]} section {missing[0][1]}, and metrics without them would silently change"
        )
    decisions = [submission_dir / decision_file_name(*_key(p)) for p in files]
    there = [p.is_file() for p in decisions]
    if any(there) and not all(there):
        lacking = decisions[there.index(False)]
        raise SubmissionError(f"{lacking}: missing, while other sections have their decision file")


def _key(score_file: Path) -> tuple[str, str]:
    match = _SCORE_FILE.match(score_file.name)
    assert match is not None
    return match["machine"], match["section"]


def evaluate_submission(submission_dir: Path, clips: Sequence[Clip]) -> tuple[ScoredRun, list[SectionMetrics]]:
    """Read a submission and compute the metrics of all its sections; hidden labels are an error."""
    run = read_submission(submission_dir, clips)
    for sec in run.sections:
        hidden = [c for c in sec.clips if c.labels_hidden]
        if hidden:
            raise SubmissionError(
                f"{hidden[0].path}: labels are hidden and no ground-truth csv gives them; cannot evaluate"
            )
    return run, run.section_metrics()
