"""``coopasd baseline``: the non-learned log-mel kNN floor over a data tree."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.baseline import run_baseline
from coopasd.cli.console import console, progress_bar
from coopasd.config import load_run_config, to_toml, with_overrides
from coopasd.data.layout import discover_clips
from coopasd.report import metrics_table, write_run


def baseline(
    data: Path = typer.Option(..., "--data", help="DCASE 2023 T2 data tree."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    config: Path | None = typer.Option(None, "--config", help="TOML config ([data], [baseline])."),
    k: int | None = typer.Option(None, help="Neighbours per memory bank (default 1)."),
    skip_bad: bool = typer.Option(False, "--skip-bad-clips", help="Skip unreadable clips instead of failing."),
) -> None:
    """Score every test clip with log-mel statistics + kNN and write the run directory."""
    cfg = load_run_config(config)
    cfg = with_overrides(cfg, "baseline", k=k)
    if skip_bad:
        cfg = with_overrides(cfg, "data", on_error="skip")
    clips = discover_clips(data)
    needed = [c for c in clips if c.split == "test" or c.label == "normal"]
    with progress_bar("log-mel kNN baseline", len(needed)) as advance:
        run = run_baseline(clips, cfg.data, cfg.baseline, advance)
    notes = [f"data: {data}", "detector: log-mel statistics + Euclidean kNN (non-learned baseline)"]
    if run.skipped:
        notes.append(f"{len(run.skipped)} unreadable clip(s) skipped")
    summary = write_run(out, run, to_toml(cfg), "coopasd baseline", notes)
    if summary is None:
        console.print(f"scores written to {out}/submission (labels hidden: no metrics)")
        return
    console.print(metrics_table(summary, f"baseline on {data}"))
    if run.skipped:
        console.print(f"[yellow]{len(run.skipped)} bad clip(s) skipped[/yellow]")
    console.print(f"wrote {out}")
