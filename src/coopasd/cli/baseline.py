"""``coopasd baseline``: the non-learned log-mel kNN floor over a data tree."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.runs import FORCE, SKIP_BAD, run_and_write
from coopasd.config.settings import load_config


def baseline(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    config: Path | None = typer.Option(None, "--config", help="TOML config (\\[data], \\[baseline])."),
    k: int | None = typer.Option(None, help="Neighbours per memory bank (default 1)."),
    skip_bad: bool = SKIP_BAD,
    force: bool = FORCE,
) -> None:
    """Score every test clip with log-mel statistics + kNN and write the run directory."""
    cfg = load_config(config, baseline={"k": k}, data={"on_error": "skip" if skip_bad else None})
    run_and_write("baseline", "baseline", data, out, cfg, force)
