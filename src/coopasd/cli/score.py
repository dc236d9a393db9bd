"""``coopasd score``: score clips with one factory's saved model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.table import Table
from rich.text import Text

from coopasd.cli.console import console


def score(
    clips: list[Path] = typer.Argument(..., help="Audio files to score."),
    model: Path = typer.Option(..., "--model", help="A factory model (RUN_DIR/models/<factory>.pt)."),
    machine: str | None = typer.Option(None, help="Machine type of the clips."),
    section: str | None = typer.Option(None, help="Section of the clips, e.g. 00."),
    output: Literal["table", "json", "csv"] = typer.Option("table", "--format", help="json, csv: full paths, lengths."),
) -> None:
    """Print each clip's anomaly score and decision (1 = anomalous), scored as the model's run saw clips."""
    from coopasd.scoring import length_note, load_model, score_file, scores_text

    factory = load_model(model)
    rows = [score_file(factory, path, machine, section) for path in clips]
    if output != "table":
        return typer.echo(scores_text(rows, output), nl=False)
    table = Table(title=Text(f"factory '{factory.name}'"), caption=Text(length_note(rows)))
    for name in ("clip", "machine/section", "score", "threshold", "decision"):
        table.add_column(name, justify="right" if name in ("score", "threshold") else "left", overflow="fold")
    for r in rows:
        verdict = Text("anomalous", style="red") if r.result.decision else Text("normal")
        where, values = f"{r.result.machine_type}/{r.result.section}", (r.result.score, r.result.threshold)
        table.add_row(Text(r.clip), where, *(f"{v:.4f}" for v in values), verdict)
    console.print(table)
