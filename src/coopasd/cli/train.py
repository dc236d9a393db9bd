"""``coopasd train``: centralized (all data pooled) or local-only (each factory alone) runs."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.console import progress_bar
from coopasd.cli.runs import write_and_print
from coopasd.config import load_config
from coopasd.pipeline import run_learned_mode
from coopasd.report import check_out_dir


def train(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree."),
    out: Path = typer.Option(..., "--out", help="Run directory to write.", callback=check_out_dir),
    mode: str = typer.Option("centralized", help="centralized (all data pooled) or local (each factory alone)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file."),
    epochs: int | None = typer.Option(None, help="Training epochs."),
    checkpoint: str | None = typer.Option(None, help="'pretrained' (shipped), 'none' (random init) or a path."),
    features: str | None = typer.Option(None, help="Detector features: fusion, learned or logmel."),
    factories: str | None = typer.Option(None, help="'plantA=fan+pump;plantB=valve'; default one per machine."),
    skip_bad: bool = typer.Option(False, "--skip-bad-clips", help="Skip unreadable clips instead of failing."),
) -> None:
    """Train, build memory banks, score the test clips and write the run directory."""
    if mode not in ("centralized", "local"):
        raise typer.BadParameter(f"--mode must be centralized or local, not '{mode}'")
    cfg = load_config(
        config,
        train={"epochs": epochs},
        model={"checkpoint": checkpoint},
        detect={"features": features},
        partition={"factories": factories},
        data={"on_error": "skip" if skip_bad else None},
    )
    result = run_learned_mode(mode, data, cfg, progress_bar)  # type: ignore[arg-type]
    write_and_print(out, result, cfg, data)
