"""``coopasd baseline``: the non-learned log-mel kNN floor over a data tree."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.console import progress_bar
from coopasd.cli.runs import write_and_print
from coopasd.config import load_config
from coopasd.pipeline import run_baseline_mode
from coopasd.report import check_out_dir


def baseline(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree."),
    out: Path = typer.Option(..., "--out", help="Run directory to write.", callback=check_out_dir),
    config: Path | None = typer.Option(None, "--config", help="TOML config ([data], [baseline])."),
    k: int | None = typer.Option(None, help="Neighbours per memory bank (default 1)."),
    skip_bad: bool = typer.Option(False, "--skip-bad-clips", help="Skip unreadable clips instead of failing."),
) -> None:
    """Score every test clip with log-mel statistics + kNN and write the run directory."""
    cfg = load_config(config, baseline={"k": k}, data={"on_error": "skip" if skip_bad else None})
    write_and_print(out, run_baseline_mode(data, cfg, progress_bar), cfg, data)
