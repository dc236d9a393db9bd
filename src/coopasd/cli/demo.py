"""``coopasd demo``: the main job on the embedded default, start to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from coopasd.cli.console import console, progress_bar
from coopasd.cli.runs import compare_and_write
from coopasd.config import load_config
from coopasd.data.synth import SynthConfig, clip_count, generate
from coopasd.errors import CoopasdError
from coopasd.pipeline import run_baseline_mode
from coopasd.report import check_out_dir, write_run


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where data and results go.", callback=check_out_dir),
    seed: int = typer.Option(0, help="Seed of the synthetic factories."),
) -> None:
    """Synthetic factories -> log-mel floor -> federated vs centralized vs local-only, with reports."""
    data = out / "data"
    if data.exists() and not (data / "synth.json").exists():
        raise CoopasdError(f"{data} exists but is not a synthetic tree; choose another --out")
    if data.exists():
        shutil.rmtree(data)  # regenerate: cheap, and guarantees the default tree
    synth = SynthConfig(seed=seed)
    cfg = load_config(None)
    console.rule("1/3 synthetic factories (one machine type per factory)")
    with progress_bar("synthesizing clips", clip_count(synth)) as advance:
        generate(synth, data, advance)
    console.rule("2/3 the non-learned floor: log-mel statistics + kNN")
    write_run(out / "baseline", run_baseline_mode(data, cfg, progress_bar), cfg, data)
    console.rule("3/3 federated (Flower simulation) vs centralized vs local-only")
    compare_and_write(data, out / "compare", cfg)
    console.print(f"reports: {out / 'compare' / 'report.html'} and {out / 'baseline' / 'report.html'}", markup=False)
