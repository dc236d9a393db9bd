from __future__ import annotations

import numpy as np
import pytest

from coopasd.data.layout import discover_clips
from coopasd.dcase.evaluation import evaluate_submission, read_score_file, score_file_name
from coopasd.errors import SubmissionError
from coopasd.rundir.writer import write_submission


def _oracle_submission(run_dir, clips, noise=0.0):
    """Scores equal to the label (+ noise): perfect detection when noise is 0."""
    rng = np.random.default_rng(0)
    for machine in {c.machine_type for c in clips}:
        test = [c for c in clips if c.machine_type == machine and c.split == "test"]
        scores = np.array([float(c.label == "anomaly") for c in test]) + noise * rng.normal(size=len(test))
        write_submission(run_dir, machine, "00", [c.name for c in test], scores, (scores > 0.5).astype(int))


def test_perfect_scores_give_perfect_metrics(tmp_path, tiny_tree):
    clips = discover_clips(tiny_tree)
    _oracle_submission(tmp_path, clips)
    run, sections = evaluate_submission(tmp_path / "submission", clips)
    assert len(sections) == 2 and all(s.values == (1.0, 1.0, 1.0) for s in sections)
    assert all(sec.decisions.sum() == 6 for sec in run.sections)


def test_missing_score_is_an_error_naming_the_clip(tmp_path, tiny_tree):
    clips = discover_clips(tiny_tree)
    _oracle_submission(tmp_path, clips)
    path = tmp_path / "submission" / score_file_name("fan", "00")
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[1:]) + "\n")
    dropped = lines[0].split(",")[0]
    with pytest.raises(SubmissionError, match="no score for 1 test clip") as info:
        evaluate_submission(tmp_path / "submission", clips)
    assert dropped in str(info.value)


def test_malformed_scores_are_errors(tmp_path):
    path = tmp_path / "anomaly_score_fan_section_00_test.csv"
    path.write_text("a.wav,0.5\nb.wav,high\n")
    with pytest.raises(SubmissionError, match="line 2.*not a number"):
        read_score_file(path)
    path.write_text("a.wav,nan\n")
    with pytest.raises(SubmissionError, match="nan"):
        read_score_file(path)


def test_empty_submission_dir_is_an_error(tmp_path, tiny_tree):
    with pytest.raises(SubmissionError, match="no anomaly_score"):
        evaluate_submission(tmp_path, discover_clips(tiny_tree))
