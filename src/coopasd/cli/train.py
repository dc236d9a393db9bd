"""``coopasd train``: centralized (all data pooled) or local-only (each factory alone) runs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from coopasd.cli.runs import CHECKPOINT, FACTORIES, FORCE, SKIP_BAD, run_and_write
from coopasd.config.settings import from_flags


def train(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    mode: Literal["centralized", "local"] = typer.Option("centralized", help="All data pooled, or each factory alone."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file."),
    epochs: int | None = typer.Option(None, help="Training epochs."),
    checkpoint: str | None = CHECKPOINT,
    features: str | None = typer.Option(None, help="Detector features: fusion, learned or logmel."),
    factories: str | None = FACTORIES,
    skip_bad: bool = SKIP_BAD,
    force: bool = FORCE,
) -> None:
    """Train, build memory banks, score the test clips and write the run directory."""
    cfg = from_flags(config, checkpoint, factories, skip_bad, train={"epochs": epochs}, detect={"features": features})
    run_and_write("train", mode, data, out, cfg, force)
