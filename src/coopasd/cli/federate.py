"""``coopasd federate``: factories train together with Flower (Simulation Engine)."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.console import progress_bar
from coopasd.cli.runs import print_round, write_and_print
from coopasd.config import load_config
from coopasd.pipeline import run_federated
from coopasd.report import check_out_dir


def federate(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree (one folder per machine type)."),
    out: Path = typer.Option(..., "--out", help="Run directory.", callback=check_out_dir),
    rounds: int | None = typer.Option(None, help="Aggregation rounds."),
    config: Path | None = typer.Option(None, "--config", help="TOML config file."),
    strategy: str | None = typer.Option(None, help="fedavg, fedprox, fedavgm or fedadam."),
    share: str | None = typer.Option(None, help="encoder, no_norm or lora."),
    checkpoint: str | None = typer.Option(None, help="'pretrained' (shipped), 'none' (random init) or a path."),
    factories: str | None = typer.Option(None, help="'plantA=fan+pump;plantB=valve'; default one per machine."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last global checkpoint in --out."),
) -> None:
    """Train one detector across factories; each scores its own clips with the final model."""
    cfg = load_config(
        config,
        model={"checkpoint": checkpoint},
        partition={"factories": factories},
        federation={"rounds": rounds, "strategy": strategy, "share": share},
    )
    result = run_federated(data, out, cfg, resume, progress_bar, print_round)
    write_and_print(out, result, cfg, data)
