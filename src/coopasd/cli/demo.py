"""``coopasd demo``: the main job on the embedded default, start to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from coopasd.cli.baseline import baseline
from coopasd.cli.console import console
from coopasd.cli.evaluate import evaluate
from coopasd.cli.synth import synth
from coopasd.data.synth import SynthConfig


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where data and results go."),
    seed: int = typer.Option(0, help="Seed of the synthetic factories."),
) -> None:
    """Generate the default synthetic factories, score them with the baseline, evaluate, report."""
    data = out / "data"
    if data.exists() and not (data / "synth.json").exists():
        raise typer.BadParameter(f"{data} exists but is not a synthetic tree; choose another --out")
    if data.exists():
        shutil.rmtree(data)  # regenerate: cheap and guarantees the default tree
    d = SynthConfig()
    console.rule("1/3 synthetic factories")
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
    console.rule("2/3 log-mel kNN baseline")
    baseline(data, out / "baseline", None, None, False)
    console.rule("3/3 evaluation from the submission files")
    evaluate(out / "baseline", data)
    console.print(f"report: {out / 'baseline' / 'report.html'}")
