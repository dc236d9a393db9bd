"""Issue 16 (items 6, 7, 12): incomplete or conflicting submissions, duplicate factory names,
config files that are huge or not files at all, and ``config show`` cutting long values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
