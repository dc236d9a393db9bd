from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cli


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run ``coopasd ARGS`` in-process; returns (exit code, stdout+stderr with whitespace collapsed)."""
    code, out, err = cli(monkeypatch, capsys, *args)
    return code, " ".join((out + err).split())


def test_synth_baseline_evaluate_report(tmp_path, monkeypatch, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    code, out = run_cli(
        monkeypatch,
        capsys,
        "synth",
        "--out",
        str(data),
        "--machines",
        "fan,gearbox",
        "--seconds",
        "0.5",
        "--train-source",
        "8",
        "--train-target",
        "2",
        "--test-per-domain",
        "8",
    )
    assert code == 0, out
    assert "fan: 10 train, 16 test clips" in out
    code, out = run_cli(monkeypatch, capsys, "baseline", "--data", str(data), "--out", str(run))
    assert code == 0, out
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["machines"]) == {"fan", "gearbox"}
    assert 0.0 < metrics["official_score"] <= 1.0
    assert sorted(p.name for p in (run / "submission").iterdir()) == [
        "anomaly_score_fan_section_00_test.csv",
        "anomaly_score_gearbox_section_00_test.csv",
        "decision_result_fan_section_00_test.csv",
        "decision_result_gearbox_section_00_test.csv",
    ]
    for name in ("config.toml", "metrics.csv", "report.html", "scores.png"):
        assert (run / name).is_file(), name
    assert "harmonic mean" in out
    # evaluate recomputes the same numbers from the submission files alone
    (run / "metrics.json").unlink()
    code, out = run_cli(monkeypatch, capsys, "evaluate", str(run), "--data", str(data))
    assert code == 0, out
    assert json.loads((run / "metrics.json").read_text())["official_score"] == pytest.approx(metrics["official_score"])
    code, out = run_cli(monkeypatch, capsys, "report", str(run))
    assert code == 0 and "report.html" in out


def test_bad_clip_fails_with_one_line_naming_it_or_is_skipped(tmp_path, monkeypatch, capsys, tiny_tree):
    data = tmp_path / "data"
    shutil.copytree(tiny_tree, data)
    victim = sorted((data / "fan" / "train").iterdir())[0]
    victim.write_bytes(b"")
    code, out = run_cli(monkeypatch, capsys, "baseline", "--data", str(data), "--out", str(tmp_path / "r1"))
    assert code == 2
    assert "error:" in out and victim.name in out and "empty file" in out
    assert not (tmp_path / "r1" / "metrics.json").exists()
    code, out = run_cli(
        monkeypatch,
        capsys,
        "baseline",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r2"),
        "--skip-bad-clips",
    )
    assert code == 0, out
    assert "1 bad clip(s) skipped" in out
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["skipped_clips"][0].count(victim.name) == 1


def test_misnamed_file_and_bad_config_are_one_line_errors(tmp_path, monkeypatch, capsys, tiny_tree):
    data = tmp_path / "data"
    shutil.copytree(tiny_tree, data)
    (data / "valve" / "test" / "recording_7.wav").write_bytes((data / "synth.json").read_bytes())
    code, out = run_cli(monkeypatch, capsys, "baseline", "--data", str(data), "--out", str(tmp_path / "r"))
    assert code == 2 and "recording_7.wav" in out and "unparseable file name" in out
    config = tmp_path / "c.toml"
    config.write_text("[baseline]\nneighbours = 2\n")
    code, out = run_cli(
        monkeypatch,
        capsys,
        "baseline",
        "--data",
        str(tiny_tree),
        "--out",
        str(tmp_path / "r"),
        "--config",
        str(config),
    )
    assert code == 2 and "unknown key" in out and "neighbours" in out


def test_evaluate_hidden_labels_without_ground_truth_is_an_error(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    code, _ = run_cli(
        monkeypatch,
        capsys,
        "synth",
        "--out",
        str(data),
        "--machines",
        "valve",
        "--seconds",
        "0.5",
        "--train-source",
        "4",
        "--train-target",
        "2",
        "--test-per-domain",
        "4",
        "--hide-labels",
    )
    assert code == 0
    shutil.rmtree(data / "ground_truth_data")
    shutil.rmtree(data / "ground_truth_domain")
    code, out = run_cli(monkeypatch, capsys, "baseline", "--data", str(data), "--out", str(tmp_path / "r"))
    assert code == 0 and "labels hidden" in out
    assert (tmp_path / "r" / "submission" / "anomaly_score_valve_section_00_test.csv").is_file()
    code, out = run_cli(monkeypatch, capsys, "evaluate", str(tmp_path / "r"), "--data", str(data))
    assert code == 2 and "labels are hidden" in out


def test_console_script_is_installed(tmp_path):
    exe = Path(sys.executable).with_name("coopasd")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in ("synth", "baseline", "evaluate", "report", "demo"):
        assert command in result.stdout
