"""``coopasd compare``: federated, centralized and local-only on the same data and seeds."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.runs import CHECKPOINT, FACTORIES, FORCE, SKIP_BAD, compare_and_write
from coopasd.config.settings import from_flags


def compare(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree."),
    out: Path = typer.Option(..., "--out", help="Run directory (one sub-directory per mode)."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file."),
    rounds: int | None = typer.Option(None, help="Federated rounds."),
    checkpoint: str | None = CHECKPOINT,
    factories: str | None = FACTORIES,
    skip_bad: bool = SKIP_BAD,
    force: bool = FORCE,
) -> None:
    """Run federated, centralized and local-only, and print the comparison table."""
    cfg = from_flags(config, checkpoint, factories, skip_bad, federation={"rounds": rounds})
    compare_and_write(data, out, cfg, force)
