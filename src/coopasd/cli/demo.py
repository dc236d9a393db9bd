"""``coopasd demo``: the main job on the embedded default, start to end."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.runs import compare_and_write, recorded, run_and_write
from coopasd.config.settings import load_config
from coopasd.report.console import console, progress_bar


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where data and results go (replaces an earlier demo)."),
    seed: int = typer.Option(0, help="Seed of the synthetic factories."),
) -> None:
    """Synthetic factories -> log-mel floor -> federated vs centralized vs local-only, with reports."""
    from coopasd.data.synth import SynthConfig, clip_count, generate

    data, synth, cfg = out / "data", SynthConfig(seed=seed), load_config(None)
    with recorded(out, "demo", force=True):  # regenerating is cheap and guarantees the default tree
        console.rule("1/3 synthetic factories (one machine type per factory)")
        with progress_bar("synthesizing clips", clip_count(synth)) as advance:
            generate(synth, data, advance)
        console.rule("2/3 the non-learned floor: log-mel statistics + kNN")
        run_and_write("baseline", "baseline", data, out / "baseline", cfg, force=True)
        console.rule("3/3 federated (Flower simulation) vs centralized vs local-only")
        compare_and_write(data, out / "compare", cfg, force=True)
    console.print(f"reports: {out / 'compare' / 'report.html'} and {out / 'baseline' / 'report.html'}", markup=False)
