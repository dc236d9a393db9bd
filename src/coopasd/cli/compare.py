"""``coopasd compare``: federated, centralized and local-only on the same data and seeds."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.runs import compare_and_write
from coopasd.config import load_config
from coopasd.report import check_out_dir


def compare(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree."),
    out: Path = typer.Option(..., "--out", help="Run directory (one sub-directory per mode).", callback=check_out_dir),
    config: Path | None = typer.Option(None, "--config", help="TOML config file."),
    rounds: int | None = typer.Option(None, help="Federated rounds."),
    checkpoint: str | None = typer.Option(None, help="'pretrained' (shipped), 'none' (random init) or a path."),
    factories: str | None = typer.Option(None, help="'plantA=fan+pump;plantB=valve'; default one per machine."),
) -> None:
    """Run federated, centralized and local-only, and print the comparison table."""
    cfg = load_config(
        config, model={"checkpoint": checkpoint}, partition={"factories": factories}, federation={"rounds": rounds}
    )
    compare_and_write(data, out, cfg)
