"""``coopasd demo``: the main job on the embedded default, start to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from coopasd.cli.baseline import baseline
from coopasd.cli.compare import run_comparison
from coopasd.cli.console import console
from coopasd.cli.synth import synth
from coopasd.cli.train import load_config
from coopasd.data.synth import SynthConfig
from coopasd.errors import CoopasdError
from coopasd.report import comparison_table


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where data and results go."),
    seed: int = typer.Option(0, help="Seed of the synthetic factories."),
) -> None:
    """Synthetic factories -> log-mel floor -> federated vs centralized vs local-only, with reports."""
    data = out / "data"
    if data.exists() and not (data / "synth.json").exists():
        raise CoopasdError(f"{data} exists but is not a synthetic tree; choose another --out")
    if data.exists():
        shutil.rmtree(data)  # regenerate: cheap, and guarantees the default tree
    d = SynthConfig()
    console.rule("1/3 synthetic factories (one machine type per factory)")
    synth(
        data,
        ",".join(d.machines),
        seed,
        d.seconds,
        d.difficulty,
        d.train_source,
        d.train_target,
        d.test_per_domain,
        False,
    )
    console.rule("2/3 the non-learned floor: log-mel statistics + kNN")
    baseline(data, out / "baseline", None, None, False)
    console.rule("3/3 federated (Flower simulation) vs centralized vs local-only")
    result = run_comparison(data, out / "compare", load_config(None))
    console.print(comparison_table(result["summaries"]))
    console.print(f"reports: {out / 'compare' / 'report.html'} and {out / 'baseline' / 'report.html'}")
