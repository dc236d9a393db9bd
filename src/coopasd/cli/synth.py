"""``coopasd synth``: write synthetic factories in the DCASE 2023 T2 layout."""

from __future__ import annotations

from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import typer

from coopasd.cli.console import console, progress_bar
from coopasd.data.synth import MACHINES, SynthConfig, clip_count, generate
from coopasd.data.unseen_plant import (
    UNSEEN_MACHINES,
    UnseenPlantConfig,
    generate_unseen_plant,
    unseen_clip_count,
)
from coopasd.report import check_out_dir


class Family(StrEnum):
    """Which generator writes the plant."""

    dev = "dev"  # coopasd.data.synth: the family every design choice was tuned on
    unseen = "unseen"  # coopasd.data.unseen_plant: a separately designed family, for reporting only


def synth(
    out: Path = typer.Option(..., "--out", help="Folder to create (must be empty or absent).", callback=check_out_dir),
    family: Family = typer.Option(
        Family.dev, help="dev: the tuning family; unseen: the separately designed plant no design choice sees."
    ),
    machines: str | None = typer.Option(
        None,
        help=f"Comma list; default: all of the family's defaults. dev: {', '.join(MACHINES)}; "
        f"unseen: {', '.join(UNSEEN_MACHINES)}.",
    ),
    seed: int = typer.Option(0, help="Seed of every clip."),
    seconds: float = typer.Option(2.0, help="Clip length in seconds (DCASE: 10)."),
    difficulty: float = typer.Option(0.5, help="0 = loud anomalies ... 1 = barely audible."),
    train_source: int = typer.Option(90, help="Normal source-domain training clips per machine."),
    train_target: int = typer.Option(10, help="Normal target-domain training clips per machine."),
    test_per_domain: int = typer.Option(100, help="Test clips per domain (half anomalous)."),
    hide_labels: bool = typer.Option(
        False, "--hide-labels", help="Eval form: anonymized test names + ground-truth csvs."
    ),
) -> None:
    """Generate deterministic synthetic factories (one machine type per folder)."""
    chosen = tuple(m.strip() for m in machines.split(",") if m.strip()) if machines else ()
    settings: dict[str, Any] = {
        "seed": seed,
        "seconds": seconds,
        "difficulty": difficulty,
        "train_source": train_source,
        "train_target": train_target,
        "test_per_domain": test_per_domain,
        "hide_labels": hide_labels,
    }
    if family is Family.unseen:
        unseen_cfg = UnseenPlantConfig(machines=chosen or UnseenPlantConfig.machines, **settings)
        total, write = unseen_clip_count(unseen_cfg), partial(generate_unseen_plant, unseen_cfg, out)
    else:
        dev_cfg = SynthConfig(machines=chosen or SynthConfig.machines, **settings)
        total, write = clip_count(dev_cfg), partial(generate, dev_cfg, out)
    with progress_bar(f"synthesizing clips ({family.value} family)", total) as advance:
        summary = write(advance)
    width = max(8, *(len(m) for m in summary.counts))
    for machine, counts in summary.counts.items():
        kinds = ", ".join(summary.anomaly_kinds[machine])
        console.print(f"{machine:>{width}}: {counts['train']} train, {counts['test']} test clips; anomalies: {kinds}")
    console.print(f"wrote {out}", markup=False)
