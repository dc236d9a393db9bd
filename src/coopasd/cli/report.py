"""``coopasd report``: rewrite a run's (or a comparison's) HTML report from its result files."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.report.console import console


def report(
    run_dir: Path = typer.Argument(..., help="Run directory with metrics.json, or a compare directory."),
) -> None:
    """Rewrite report.html from metrics.json / comparison.json (+ submission files for the plots); print the table."""
    from coopasd.report.run_report import rebuild_report
    from coopasd.report.tables import metrics_table
    from coopasd.rundir.writer import is_comparison

    summary, page = rebuild_report(run_dir)
    if is_comparison(run_dir):
        scores = ", ".join(f"{mode} {100 * s['official_score']:.2f}%" for mode, s in summary["modes"].items())
        console.print(f"official score: {scores}")
    else:
        console.print(metrics_table(summary, str(run_dir)))
    console.print(f"wrote {page}", markup=False)
