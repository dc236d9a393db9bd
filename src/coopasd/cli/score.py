"""``coopasd score``: score clips with one factory's saved model."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from coopasd.cli.console import console
from coopasd.data.audio import load_audio
from coopasd.scoring import load_model, resolve_section, score_wave


def score(
    clips: list[Path] = typer.Argument(..., help="Audio files to score."),
    model: Path = typer.Option(..., "--model", help="A factory model (RUN_DIR/models/<factory>.pt)."),
    machine: str | None = typer.Option(None, help="Machine type of the clips."),
    section: str | None = typer.Option(None, help="Section of the clips, e.g. 00."),
) -> None:
    """Print each clip's anomaly score and decision (1 = anomalous)."""
    factory = load_model(model)
    table = Table(title=escape(f"factory '{factory.name}'"))
    for name in ("clip", "machine/section", "score", "threshold", "decision"):
        table.add_column(name, justify="right" if name in ("score", "threshold") else "left")
    for path in clips:
        m, s = resolve_section(factory, path, machine, section)
        wave = load_audio(path, factory.data_cfg.sample_rate, factory.data_cfg.seconds)
        result = score_wave(factory, wave, m, s, str(path))
        verdict = "[red]anomalous[/red]" if result.decision else "normal"
        table.add_row(escape(path.name), escape(f"{m}/{s}"), f"{result.score:.4f}", f"{result.threshold:.4f}", verdict)
    console.print(table)
