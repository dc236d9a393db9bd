"""What several commands share: options, flags -> config, the run record, running a mode, writing, printing."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from coopasd.report.console import console, progress_bar

if TYPE_CHECKING:
    from coopasd.config.settings import RunConfig
    from coopasd.dcase.results import Comparison, ModeResult

FORCE = typer.Option(False, "--force", help="Replace an earlier finished run in --out (deletes what it wrote).")
SKIP_BAD = typer.Option(False, "--skip-bad-clips", help="Skip unreadable clips instead of failing.")
CHECKPOINT = typer.Option(None, help="'pretrained' (shipped), 'none' (random init) or a path.")
FACTORIES = typer.Option(None, help="'plantA=fan+pump;plantB=valve'; default one per machine.")


def recorded(out: Path, kind: str, force: bool, resume: bool = False) -> AbstractContextManager[dict]:
    """Claim ``out`` for a ``kind`` run and keep its ``run.json`` (:func:`coopasd.rundir.writer.recorded_run`)."""
    from coopasd.rundir.writer import recorded_run

    return recorded_run(out, kind, ["coopasd", *sys.argv[1:]], force, resume)


def print_round(entry: dict) -> None:
    """One line per federated round (:func:`coopasd.report.tables.round_line`)."""
    from coopasd.report.tables import round_line

    console.print(round_line(entry), markup=False)


def run_and_write(kind: str, mode: str, data: Path, out: Path, cfg: RunConfig, force: bool, resume: bool = False):
    """Run ``mode`` of command ``kind`` into ``out`` under its run record, write the run directory, print its table."""
    from coopasd.experiment.pipeline import run_baseline_mode, run_mode

    with recorded(out, kind, force, resume):
        if mode == "baseline":
            result = run_baseline_mode(data, cfg, progress_bar)
        else:
            federated = {"resume": resume, "on_round": print_round} if mode == "federated" else {}
            result = run_mode(mode, data, out, cfg, progress_bar, **federated)
        return write_and_print(out, result, cfg, data)


def write_and_print(out: Path, result: ModeResult, cfg: RunConfig, data: Path) -> dict | None:
    """Write the run directory and print its metrics table (or why there is none)."""
    from coopasd.report.run_report import write_run
    from coopasd.report.tables import metrics_table

    summary = write_run(out, result, cfg, data)
    if summary is None:
        console.print(f"scores written to {out}/submission (labels hidden: no metrics)", markup=False)
        return None
    console.print(metrics_table(summary, f"{result.mode} on {data}"))
    if result.run.skipped:
        console.print(f"{len(result.run.skipped)} bad clip(s) skipped", style="yellow")
    console.print(f"wrote {out}", markup=False)
    return summary


def compare_and_write(data: Path, out: Path, cfg: RunConfig, force: bool) -> Comparison:
    """Federated, centralized and local-only into ``out/<mode>/`` and the comparison, under a run record; prints it."""
    from coopasd.experiment.pipeline import run_comparison
    from coopasd.report.run_report import write_comparison, write_run
    from coopasd.report.tables import comparison_table

    def mode_done(result: ModeResult) -> None:
        write_run(out / result.mode, result, cfg, data)
        console.rule(f"{result.mode}: done")

    with recorded(out, "compare", force):
        comparison = run_comparison(data, out, cfg, progress_bar, on_mode=mode_done, on_round=print_round)
        write_comparison(out, comparison, cfg, data)
    console.print(comparison_table(comparison.summaries()))
    console.print(f"wrote {out / 'comparison.json'} and {out / 'report.html'}", markup=False)
    return comparison
