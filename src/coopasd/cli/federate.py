"""``coopasd federate``: factories train together with Flower (Simulation Engine)."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.runs import CHECKPOINT, FACTORIES, FORCE, SKIP_BAD, run_and_write
from coopasd.config.settings import from_flags


def federate(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree (one folder per machine type)."),
    out: Path = typer.Option(..., "--out", help="Run directory."),
    rounds: int | None = typer.Option(None, help="Aggregation rounds."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file."),
    strategy: str | None = typer.Option(None, help="fedavg, fedprox, fedavgm or fedadam."),
    share: str | None = typer.Option(None, help="encoder, no_norm or lora."),
    checkpoint: str | None = CHECKPOINT,
    factories: str | None = FACTORIES,
    resume: bool = typer.Option(False, "--resume", help="Continue from the last global checkpoint in --out."),
    skip_bad: bool = SKIP_BAD,
    force: bool = FORCE,
) -> None:
    """Train one detector across factories; each scores its own clips with the final model."""
    federation = {"rounds": rounds, "strategy": strategy, "share": share}
    cfg = from_flags(config, checkpoint, factories, skip_bad, federation=federation)
    run_and_write("federate", "federated", data, out, cfg, force, resume)
