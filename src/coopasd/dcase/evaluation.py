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
    """``file_name,score`` rows (no header, as DCASE writes them) -> {file name: score}."""
    scores: dict[str, float] = {}
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
                scores[Path(row[0]).name] = value
    except OSError as err:
        raise SubmissionError(f"{path}: cannot read ({err})") from err
    return scores


def read_submission(submission_dir: Path, clips: Sequence[Clip], require_all: bool = True) -> ScoredRun:
    """Scores (and decisions, where present) of every section with a score file in ``submission_dir``.

    Every test clip of such a section must have a score (a missing one is an error naming it),
    unless ``require_all`` is False: then clips without a score (skipped as unreadable) are left out.
    """
    submission_dir = Path(submission_dir)
    files = sorted(p for p in submission_dir.glob("anomaly_score_*_test.csv") if _SCORE_FILE.match(p.name))
    if not files:
        raise SubmissionError(f"{submission_dir}: no anomaly_score_<machine>_section_XX_test.csv files")
    groups = group_by_machine_section(c for c in clips if c.split == "test")
    sections: list[SectionScores] = []
    for path in files:
        match = _SCORE_FILE.match(path.name)
        assert match is not None
        machine, section = match["machine"], match["section"]
        test = groups.get((machine, section))
        if not test:
            raise SubmissionError(f"{path}: the data tree has no test clips of {machine} section {section}")
        scores = read_score_file(path)
        missing = [c.name for c in test if c.name not in scores]
        if not require_all:
            test = [c for c in test if c.name in scores]
        elif missing:
            raise SubmissionError(f"{path}: no score for {len(missing)} test clip(s), e.g. {missing[0]}")
        decision_path = path.with_name(decision_file_name(machine, section))
        decisions = read_score_file(decision_path) if decision_path.exists() else None
        sections.append(
            SectionScores(
                machine,
                section,
                list(test),
                np.array([scores[c.name] for c in test]),
                None if decisions is None else np.array([int(decisions.get(c.name, 0)) for c in test]),
                float("nan"),
            )
        )
    return ScoredRun(sections, [])


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
