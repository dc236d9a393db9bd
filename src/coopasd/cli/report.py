"""``coopasd report``: (re)write a run directory's HTML report from its metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from coopasd.cli.console import console
from coopasd.errors import SubmissionError
from coopasd.report import metrics_table, write_html


def report(run_dir: Path = typer.Argument(..., help="Run directory with metrics.json.")) -> None:
    """Print the metrics table and write report.html."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise SubmissionError(f"{path}: not found; run 'coopasd evaluate {run_dir} --data DATA' first")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SubmissionError(f"{path}: not valid JSON ({err})") from err
    images = ["scores.png"] if (run_dir / "scores.png").exists() else []
    page = write_html(run_dir, summary, "coopasd report", [f"run: {run_dir}"], images)
    console.print(metrics_table(summary, str(run_dir)))
    console.print(f"wrote {page}", markup=False)
