"""``coopasd score``: score clips with one factory's saved model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from coopasd.report.console import console


def score(
    clips: list[Path] = typer.Argument(..., help="Audio files to score."),
    model: Path = typer.Option(..., "--model", help="A factory model (RUN_DIR/models/<factory>.pt)."),
    machine: str | None = typer.Option(None, help="Machine type of the clips."),
    section: str | None = typer.Option(None, help="Section of the clips, e.g. 00."),
    output: Literal["table", "json", "csv"] = typer.Option("table", "--format", help="json, csv: full paths, lengths."),
) -> None:
    """Print each clip's anomaly score and decision (1 = anomalous), scored as the model's run saw clips."""
    from coopasd.inference.scoring import load_model, score_file, scores_table, scores_text

    factory = load_model(model)
    rows = [score_file(factory, path, machine, section) for path in clips]
    if output != "table":
        return typer.echo(scores_text(rows, output), nl=False)
    console.print(scores_table(rows, factory.name))
