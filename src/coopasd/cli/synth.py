"""``coopasd synth``: write synthetic factories in the DCASE 2023 T2 layout."""

from __future__ import annotations

from pathlib import Path

import typer

from coopasd.report.console import console, progress_bar


def synth(
    out: Path = typer.Option(..., "--out", help="Folder to create (must be empty or absent)."),
    family: str = typer.Option("dev", help="dev: the tuning family; unseen: a separately designed plant."),
    machines: str = typer.Option("", help="Comma list; default: the family's (dev: fan,gearbox,bearing,valve,slider)."),
    seed: int = typer.Option(0, help="Seed of every clip."),
    seconds: float = typer.Option(2.0, help="Clip length in seconds (DCASE: 10)."),
    difficulty: float = typer.Option(0.5, help="0 = loud anomalies ... 1 = barely audible."),
    train_source: int = typer.Option(90, help="Normal source-domain training clips per machine."),
    train_target: int = typer.Option(10, help="Normal target-domain training clips per machine."),
    test_per_domain: int = typer.Option(100, help="Test clips per domain (half anomalous)."),
    hide_labels: bool = typer.Option(False, "--hide-labels", help="Eval form: anonymized names + ground-truth csvs."),
) -> None:
    """Generate deterministic synthetic factories (one machine type per folder)."""
    from coopasd.data.families import FAMILIES, generate_plant, plant_clip_count, plant_config

    if family not in FAMILIES:
        raise typer.BadParameter(f"--family must be one of {', '.join(FAMILIES)}, not '{family}'")
    names = tuple(m.strip() for m in machines.split(",") if m.strip())
    counts = {"train_source": train_source, "train_target": train_target, "test_per_domain": test_per_domain}
    cfg = plant_config(
        family, names, seed=seed, seconds=seconds, difficulty=difficulty, hide_labels=hide_labels, **counts
    )  # type: ignore[arg-type]
    with progress_bar(f"synthesizing clips ({family} family)", plant_clip_count(cfg)) as advance:
        summary = generate_plant(cfg, out, advance)
    for machine, n in summary.counts.items():
        kinds = ", ".join(summary.anomaly_kinds[machine])
        console.print(f"{machine:>10}: {n['train']} train, {n['test']} test clips; anomalies: {kinds}")
    console.print(f"wrote {out}", markup=False)
