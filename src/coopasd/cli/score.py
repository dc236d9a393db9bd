"""``coopasd score``: score clips with one factory's saved model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from coopasd.cli.console import console
from coopasd.data.audio import load_audio
from coopasd.data.layout import parse_clip_path
from coopasd.detect import FactoryModel
from coopasd.errors import CoopasdError, LayoutError


def _section_of(path: Path, model: FactoryModel, machine: str | None, section: str | None) -> tuple[str, str]:
    """Machine type and section from the flags, else the DCASE name and folder, else the only one there is."""
    if machine and section:
        return machine, section
    try:
        clip = parse_clip_path(path, path.parent.parent.name, path.parent.name)
        key = f"{machine or clip.machine_type}/{section or clip.section}"
        if key in model.detectors:
            return tuple(key.split("/"))  # type: ignore[return-value]
    except LayoutError:
        pass
    candidates = [k for k in model.detectors if (machine is None or k.startswith(machine + "/"))]
    if len(candidates) == 1:
        return tuple(candidates[0].split("/"))  # type: ignore[return-value]
    raise CoopasdError(
        f"{path}: cannot tell which machine type and section it is; pass --machine and --section "
        f"(the model knows {', '.join(sorted(model.detectors))})"
    )


def score(
    clips: list[Path] = typer.Argument(..., help="Audio files to score."),
    model: Path = typer.Option(..., "--model", help="A factory model (RUN_DIR/models/<factory>.pt)."),
    machine: str | None = typer.Option(None, help="Machine type of the clips."),
    section: str | None = typer.Option(None, help="Section of the clips, e.g. 00."),
) -> None:
    """Print each clip's anomaly score and decision (1 = anomalous)."""
    factory = FactoryModel.load(model)
    table = Table(title=f"factory '{factory.name}'")
    for name in ("clip", "machine/section", "score", "threshold", "decision"):
        table.add_column(name, justify="right" if name in ("score", "threshold") else "left")
    for path in clips:
        m, s = _section_of(path, factory, machine, section)
        wave = load_audio(path, factory.data_cfg.sample_rate, factory.data_cfg.seconds)
        scores, decisions = factory.score(wave[np.newaxis], m, s)
        threshold = factory.detectors[f"{m}/{s}"].threshold
        verdict = "[red]anomalous[/red]" if decisions[0] else "normal"
        table.add_row(path.name, f"{m}/{s}", f"{scores[0]:.4f}", f"{threshold:.4f}", verdict)
    console.print(table)
