"""``coopasd train``: centralized (all data pooled) or local-only (each factory alone) runs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from coopasd.cli.console import console, progress_bar
from coopasd.config import RunConfig, load_run_config, with_overrides
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.experiment import load_all, run_centralized, run_local, training_steps, write_mode_run
from coopasd.report import metrics_table


def load_config(
    config: Path | None,
    epochs: int | None = None,
    checkpoint: str | None = None,
    features: str | None = None,
    factories: str | None = None,
    skip_bad: bool = False,
) -> RunConfig:
    """The run config: the TOML file (or defaults) with the flags that were given on top."""
    cfg = load_run_config(config)
    cfg = with_overrides(cfg, "train", epochs=epochs)
    cfg = with_overrides(cfg, "model", checkpoint=checkpoint)
    cfg = with_overrides(cfg, "detect", features=features)
    cfg = with_overrides(cfg, "partition", factories=factories)
    return with_overrides(cfg, "data", on_error="skip") if skip_bad else cfg


def run_learned_mode(mode: Literal["centralized", "local"], data: Path, out: Path, cfg: RunConfig) -> dict | None:
    """Load every factory's clips, train in ``mode``, score, write ``out``; returns the metrics."""
    clips = discover_clips(data)
    factories = parse_factories(cfg.partition.factories, sorted({c.machine_type for c in clips}))
    needed = sum(1 for c in clips if c.split == "test" or c.label == "normal")
    with progress_bar(f"{mode}: loading clips", needed) as advance:
        datas = load_all(clips, factories, cfg.data, advance)
    steps = training_steps(datas, cfg) if cfg.detect.features != "logmel" else 0
    with progress_bar(f"{mode}: training", steps) as advance:
        result = (run_centralized if mode == "centralized" else run_local)(datas, cfg, advance)
    return write_mode_run(out, mode, result, cfg, data)


def train(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
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
    cfg = load_config(config, epochs, checkpoint, features, factories, skip_bad)
    summary = run_learned_mode(mode, data, out, cfg)  # type: ignore[arg-type]
    if summary is None:
        console.print(f"scores written to {out}/submission (labels hidden: no metrics)")
        return
    console.print(metrics_table(summary, f"{mode} on {data}"))
    console.print(f"wrote {out}")
