"""Issue 16 (items 6, 7, 12): incomplete or conflicting submissions, duplicate factory names,
config files that are huge or not files at all, and ``config show`` cutting long values."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coopasd.config import MAX_CONFIG_BYTES, load_run_config
from coopasd.data.partition import parse_factories
from coopasd.errors import ConfigError
from tests.helpers import cli

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
