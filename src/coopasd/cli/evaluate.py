"""``coopasd evaluate``: (re)compute DCASE metrics from a run's (or a comparison's) submission files."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.report.console import console


def evaluate(
    run_dir: Path = typer.Argument(..., help="Run directory with submission/ inside, or a compare directory."),
    data: Path = typer.Option(..., "--data", help="The data tree the run scored (labels or ground truth)."),
) -> None:
    """Recompute the metrics (every other key of metrics.json is kept), rewrite the report, print the table."""
    from coopasd.report.run_report import evaluate_comparison, evaluate_run
    from coopasd.report.tables import comparison_table, metrics_table
    from coopasd.rundir.writer import is_comparison

    if is_comparison(run_dir):
        _, modes = evaluate_comparison(run_dir, data)
        console.print(comparison_table(modes))
        return console.print(
            f"wrote {run_dir / 'comparison.json'}, the modes' metrics.json and report.html", markup=False
        )
    summary, _ = evaluate_run(run_dir, data)
    console.print(metrics_table(summary, f"{run_dir}"))
    console.print(f"wrote {run_dir / 'metrics.json'} and {run_dir / 'report.html'}", markup=False)
