"""Does the detector transfer? Floor, learned-only and default detectors on a development plant and
an unseen plant, in all three modes (federated, centralized, local-only).

Protocol: every setting is chosen on the development plant (``coopasd synth``, the family the
project was built on); the unseen plant (``coopasd synth --family unseen``: other machines,
physics, faults, rooms and microphones) is only reported, never used to choose.

    .venv/bin/python benchmarks/generalization.py --dev runs/gen/dev --unseen runs/gen/unseen \\
        [--detectors "learned;learned+aisfx+logmel;aisfx+logmel"] [--modes federated,centralized,local] \\
        [--config configs/aisfx_tuned.toml]

Trees that do not exist are generated with the default settings (seed 0). Prints one table; each
finished row is also printed as it completes (long runs).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coopasd.config.settings import load_config
from coopasd.data.synth import SynthConfig, generate
from coopasd.data.unseen_plant import UnseenPlantConfig, generate_unseen_plant
from coopasd.experiment.pipeline import run_baseline_mode, run_mode

DEFAULT_DETECTORS = "learned;fusion;aisfx+logmel;learned+aisfx+logmel"


def ensure_plant(path: Path, family: str) -> Path:
    if not path.exists():
        if family == "dev":
            generate(SynthConfig(), path)
        else:
            generate_unseen_plant(UnseenPlantConfig(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev", type=Path, required=True, help="development plant (created if missing)")
    parser.add_argument("--unseen", type=Path, required=True, help="unseen plant (created if missing)")
    parser.add_argument("--detectors", default=DEFAULT_DETECTORS, help="';'-separated [detect] features values")
    parser.add_argument("--modes", default="federated,centralized,local")
    parser.add_argument("--plants", default="dev,unseen")
    parser.add_argument("--config", type=Path, default=None, help="TOML config the detectors run with (e.g. backbone)")
    parser.add_argument("--evaluate-every", type=int, default=None, help="[federation] evaluate_every (0: no curve)")
    args = parser.parse_args()
    console = Console()
    modes = args.modes.split(",")
    table = Table(title="official score (%) on the development plant (choices made here) and the unseen plant")
    for col in ("plant", "detector", *modes, "seconds"):
        table.add_column(col, justify="left" if col in ("plant", "detector") else "right")
    for plant in args.plants.split(","):
        data = ensure_plant(args.dev if plant == "dev" else args.unseen, plant)
        floor = run_baseline_mode(data, load_config(None)).summary()
        score = f"{100 * floor['official_score']:.2f}" if floor else "-"
        table.add_row(plant, "log-mel floor (no learning)", *[score] * len(modes), "")
        console.print(f"{plant} | floor | {score}")
        for features in args.detectors.split(";"):
            cfg = load_config(
                args.config, detect={"features": features}, federation={"evaluate_every": args.evaluate_every}
            )
            row = []
            start = time.time()
            for mode in modes:
                with tempfile.TemporaryDirectory() as tmp:
                    summary = run_mode(mode, data, Path(tmp) / mode, cfg).summary()
                row.append(f"{100 * summary['official_score']:.2f}" if summary else "-")
                console.print(f"{plant} | {features} | {mode} | {row[-1]}")
            table.add_row(plant, features, *row, f"{time.time() - start:.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
