"""Issue 16 (items 6, 7, 12): incomplete or conflicting submissions, duplicate factory names,
config files that are huge or not files at all, and ``config show`` cutting long values."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coopasd.config.settings import MAX_CONFIG_BYTES, load_run_config
from coopasd.data.partition import parse_factories
from coopasd.errors import ConfigError
from tests.helpers import cli, make_tree

SRC = Path(__file__).resolve().parents[1] / "src"


def _coopasd(*args: str, columns: int = 80, timeout: float = 60) -> subprocess.CompletedProcess:
    """``coopasd ARGS`` in a fresh process whose stdout is a pipe, ``COLUMNS`` set."""
    env = os.environ | {"COLUMNS": str(columns), "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-c", "from coopasd.cli.app import main; main()", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_config_show_prints_long_paths_whole_at_80_columns(tmp_path):
    folder = tmp_path / ("plant-archive-" * 8)
    folder.mkdir()
    checkpoint, config = folder / "backbone.pt", folder / "c.toml"
    config.write_text(f'[model]\ncheckpoint = "{checkpoint}"\n')
    shown = _coopasd("config", "show", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any(str(config) in line for line in lines), shown.stdout[:600]  # the title names the file whole
    (row,) = [line for line in lines if "*checkpoint" in line]
    assert f'"{checkpoint}"' in row and '"pretrained"' in row  # the value, then the default, on one line
    meaning = [line for line in lines if "rate clips are brought to" in line]
    assert meaning and all(len(line) < 400 for line in lines)  # the prose still wraps


def _one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout[-500:], result.stderr[-500:])
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_a_factory_name_given_twice_is_refused_naming_it(tmp_path, monkeypatch, capsys, tiny_tree):
    with pytest.raises(ConfigError, match="factory name 'a' is given twice"):
        parse_factories("a=fan;a=valve", ["fan", "valve"])
    assert [f.name for f in parse_factories("a=fan;b=valve", ["fan", "valve"])] == ["a", "b"]
    out = tmp_path / "run"
    for command in ("train", "federate", "compare"):
        args = [command, "--data", str(tiny_tree), "--out", str(out), "--factories", " a = fan ; a=valve"]
        code, text, err = cli(monkeypatch, capsys, *args + (["--mode", "local"] if command == "train" else []))
        assert code == 2 and "Traceback" not in text + err, (command, err)
        assert "factory name 'a' is given twice" in err, (command, err)
        assert not out.exists()  # refused before anything was written
    config = tmp_path / "c.toml"
    config.write_text('[partition]\nfactories = "north=fan;north=valve"\n')
    code, _, err = cli(monkeypatch, capsys, "config", "show", "--config", str(config))
    assert code == 2 and f"{config}: [partition] factories" in err and "'north' is given twice" in err


def test_config_files_that_are_not_small_regular_files_are_refused_at_once(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # nobody ever writes: reading it would wait forever
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    for path, problem in (
        (fifo, "not a regular file"),
        (Path("/dev/zero"), "not a regular file"),
        (huge, f"larger than {MAX_CONFIG_BYTES} bytes"),
    ):
        started = time.monotonic()
        _one_error_line(_coopasd("config", "show", "--config", str(path), timeout=30), f"{path}: {problem}")
        assert time.monotonic() - started < 20
    fine = tmp_path / "fine.toml"
    fine.write_text("# " + "x" * (MAX_CONFIG_BYTES - 100) + "\n[train]\nepochs = 3\n")  # large but under the cap
    assert load_run_config(fine).train.epochs == 3


# ---------------------------------------------------------------- evaluate: incomplete or conflicting submissions

SCORES = "submission/anomaly_score_fan_section_00_test.csv"
DECISIONS = "submission/decision_result_fan_section_00_test.csv"


def _first_row(text: str) -> str:
    return text.splitlines()[0]


CORRUPTIONS = {  # what is done to a good run directory -> what the error line names
    "score file deleted": (lambda run: (run / SCORES).unlink(), SCORES),
    "decision file deleted": (lambda run: (run / DECISIONS).unlink(), DECISIONS),
    "a row left out": (lambda run: _edit(run / SCORES, lambda t: "\n".join(t.splitlines()[1:]) + "\n"), SCORES),
    "a row twice": (lambda run: _edit(run / SCORES, lambda t: t + _first_row(t) + "\n"), SCORES),
    "the same clip by path and by name": (
        lambda run: _edit(run / SCORES, lambda t: t + "fan/test/" + _first_row(t) + "\n"),
        SCORES,
    ),
    "a row of a clip the data has not": (lambda run: _edit(run / SCORES, lambda t: t + "ghost.wav,0.5\n"), SCORES),
    "an infinite score": (lambda run: _edit(run / SCORES, lambda t: t.replace(",", ",inf\n#", 1)), SCORES),
    "a decision of 0.5": (
        lambda run: _edit(run / DECISIONS, lambda t: re.sub(r",[01]\n", ",0.5\n", t, count=1)),
        DECISIONS,
    ),
    "a decision row left out": (
        lambda run: _edit(run / DECISIONS, lambda t: "\n".join(t.splitlines()[1:]) + "\n"),
        DECISIONS,
    ),
}


def _edit(path: Path, change) -> None:
    path.write_text(change(path.read_text()))


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory) -> Path:
    """A finished baseline run over a tiny tree (data at ``run/../data``)."""
    root = tmp_path_factory.mktemp("scored")
    make_tree(root / "data")
    done = _coopasd("baseline", "--data", str(root / "data"), "--out", str(root / "run"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "run"


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_evaluate_refuses_an_incomplete_or_conflicting_submission_and_keeps_metrics(
    tmp_path, monkeypatch, capsys, scored_run, corruption
):
    run, data = tmp_path / "run", scored_run.parent / "data"
    shutil.copytree(scored_run, run)
    before = (run / "metrics.json").read_bytes()
    damage, named = CORRUPTIONS[corruption]
    damage(run)
    code, out, err = cli(monkeypatch, capsys, "evaluate", str(run), "--data", str(data))
    assert code == 2 and "Traceback" not in out + err, (corruption, out, err)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and str(run / named) in " ".join(err.split()), (corruption, err)
    assert (run / "metrics.json").read_bytes() == before  # the old metrics stay


def test_evaluate_of_a_complete_submission_still_recomputes(tmp_path, monkeypatch, capsys, scored_run):
    run, data = tmp_path / "run", scored_run.parent / "data"
    shutil.copytree(scored_run, run)
    summary = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(summary | {"official_score": 0.123}))
    code, _, err = cli(monkeypatch, capsys, "evaluate", str(run), "--data", str(data))
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["official_score"] == summary["official_score"]


def test_evaluate_of_a_comparison_rewrites_nothing_when_one_mode_is_incomplete(
    tmp_path, monkeypatch, capsys, scored_run
):
    out, data = tmp_path / "cmp", scored_run.parent / "data"
    for mode in ("federated", "centralized", "local"):
        shutil.copytree(scored_run, out / mode)
        stale = json.loads((out / mode / "metrics.json").read_text()) | {"official_score": 0.123}
        (out / mode / "metrics.json").write_text(json.dumps(stale))
    (out / "local" / SCORES).unlink()
    code, _, err = cli(monkeypatch, capsys, "evaluate", str(out), "--data", str(data))
    assert code == 2 and str(out / "local" / SCORES) in " ".join(err.split()), err
    for mode in ("federated", "centralized", "local"):  # no mode was rewritten, the first ones included
        assert json.loads((out / mode / "metrics.json").read_text())["official_score"] == 0.123
    assert not (out / "comparison.json").exists()


@pytest.mark.parametrize("nested", ["[" * 2000 + "]" * 2000, "{b=" * 2000 + "1" + "}" * 2000])
def test_a_config_nested_too_deeply_is_one_line_not_a_recursion_traceback(tmp_path, monkeypatch, capsys, nested):
    config = tmp_path / "deep.toml"
    config.write_text(f"a = {nested}\n")  # 8 kB: under the size cap
    code, out, err = cli(monkeypatch, capsys, "config", "show", "--config", str(config))
    assert code == 2 and "Traceback" not in out + err and "RecursionError" not in out + err
    assert f"{config}: not valid TOML (arrays or tables nested too deeply)" in " ".join(err.split())
