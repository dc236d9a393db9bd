"""``coopasd export``: a factory model as safetensors, ONNX or TorchScript, for scoring without coopasd."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.report.console import console


def export(
    model: Path = typer.Option(..., "--model", help="A factory model (RUN_DIR/models/<factory>.pt)."),
    fmt: str = typer.Option(..., "--format", help="safetensors (all sections), onnx or torchscript (per section)."),
    out: Path = typer.Option(..., "--out", help="File to write; per-section formats add .<machine>_<section>."),
    section: str | None = typer.Option(None, help="onnx/torchscript: only this machine/section."),
) -> None:
    """Export the encoder and every section's detector (banks, scales, thresholds) of a factory model."""
    from coopasd.inference.export import export_model  # torch.onnx and friends load only for this command
    from coopasd.inference.scoring import load_model
    from coopasd.rundir.writer import write_files

    for path in write_files(export_model(load_model(model), fmt, out, section)):  # type: ignore[arg-type]
        console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
