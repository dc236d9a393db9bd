"""``coopasd evaluate``: (re)compute DCASE metrics from a run's submission files."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.console import console
from coopasd.data.layout import discover_clips
from coopasd.evaluation import evaluate_submission
from coopasd.metrics import summarize
from coopasd.report import metrics_table, write_metrics, write_report


def evaluate(
    run_dir: Path = typer.Argument(..., help="Run directory with submission/ inside."),
    data: Path = typer.Option(..., "--data", help="The data tree the run scored (labels or ground truth)."),
) -> None:
    """Print the per-machine table and write metrics.json, metrics.csv and the report."""
    clips = discover_clips(data, splits=("test",))
    run, sections = evaluate_submission(run_dir / "submission", clips)
    summary = summarize(sections)
    write_metrics(run_dir, summary)
    write_report(run_dir, run, summary, "coopasd evaluation", [f"data: {data}", f"run: {run_dir}"])
    console.print(metrics_table(summary, f"{run_dir}"))
    console.print(f"wrote {run_dir / 'metrics.json'}", markup=False)
