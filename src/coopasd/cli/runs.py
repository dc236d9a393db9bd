"""What several commands share: run a mode of the pipeline with progress, write it, print it."""

from __future__ import annotations

from pathlib import Path

from coopasd.cli.console import console, progress_bar
from coopasd.config import RunConfig
from coopasd.pipeline import run_comparison
from coopasd.report import comparison_table, metrics_table, write_comparison, write_run
from coopasd.results import Comparison, ModeResult


def print_round(entry: dict) -> None:
    """One line per federated round."""
    score, rejected = entry.get("official_score"), sorted(entry.get("rejected", {}))
    console.print(
        f"round {entry['round']}: {entry['answered']}/{entry['asked']} factories, "
        f"{entry['seconds']:.0f} s"
        + (f", official score {100 * score:.2f}" if score else "")
        + (f", rejected: {', '.join(rejected)}" if rejected else "")
    )


def write_and_print(out: Path, result: ModeResult, cfg: RunConfig, data: Path) -> dict | None:
    """Write the run directory and print its metrics table (or why there is none)."""
    summary = write_run(out, result, cfg, data)
    if summary is None:
        console.print(f"scores written to {out}/submission (labels hidden: no metrics)")
        return None
    console.print(metrics_table(summary, f"{result.mode} on {data}"))
    if result.run.skipped:
        console.print(f"[yellow]{len(result.run.skipped)} bad clip(s) skipped[/yellow]")
    console.print(f"wrote {out}")
    return summary


def compare_and_write(data: Path, out: Path, cfg: RunConfig) -> Comparison:
    """Federated, centralized and local-only into ``out/<mode>/``, then the comparison; prints the table."""

    def mode_done(result: ModeResult) -> None:
        write_run(out / result.mode, result, cfg, data)
        console.rule(f"{result.mode}: done")

    comparison = run_comparison(data, out, cfg, progress_bar, on_mode=mode_done, on_round=print_round)
    write_comparison(out, comparison, cfg, data)
    console.print(comparison_table(comparison.summaries()))
    console.print(f"wrote {out / 'comparison.json'} and {out / 'report.html'}")
    return comparison
