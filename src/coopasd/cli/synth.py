"""``coopasd synth``: write synthetic factories in the DCASE 2023 T2 layout."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.cli.console import console, progress_bar

DEFAULT_MACHINES = "fan,gearbox,bearing,valve,slider"  # SynthConfig.machines (a test keeps them equal)


def synth(
    out: Path = typer.Option(..., "--out", help="Folder to create (must be empty or absent)."),
    machines: str = typer.Option(DEFAULT_MACHINES, help="Comma list of: fan, gearbox, bearing, valve, slider, pump."),
    seed: int = typer.Option(0, help="Seed of every clip."),
    seconds: float = typer.Option(2.0, help="Clip length in seconds (DCASE: 10)."),
    difficulty: float = typer.Option(0.5, help="0 = loud anomalies ... 1 = barely audible."),
    train_source: int = typer.Option(90, help="Normal source-domain training clips per machine."),
    train_target: int = typer.Option(10, help="Normal target-domain training clips per machine."),
    test_per_domain: int = typer.Option(100, help="Test clips per domain (half anomalous)."),
    hide_labels: bool = typer.Option(False, "--hide-labels", help="Eval form: anonymized names + ground-truth csvs."),
) -> None:
    """Generate deterministic synthetic factories (one machine type per folder)."""
    from coopasd.data.synth import SynthConfig, clip_count, generate

    names = tuple(m.strip() for m in machines.split(",") if m.strip())
    counts = {"train_source": train_source, "train_target": train_target, "test_per_domain": test_per_domain}
    cfg = SynthConfig(
        machines=names, seed=seed, seconds=seconds, difficulty=difficulty, hide_labels=hide_labels, **counts
    )
    with progress_bar("synthesizing clips", clip_count(cfg)) as advance:
        summary = generate(cfg, out, advance)
    for machine, counts in summary.counts.items():
        kinds = ", ".join(summary.anomaly_kinds[machine])
        console.print(f"{machine:>8}: {counts['train']} train, {counts['test']} test clips; anomalies: {kinds}")
    console.print(f"wrote {out}", markup=False)
