"""Privacy against utility: the official score of federated runs without protection, with SecAgg+, with
clipping alone and with factory-level DP at epsilon = 8, 3, 1 (the noise multiplier that reaches each
epsilon at the given delta and number of rounds comes from the accountant).

    .venv/bin/python benchmarks/privacy.py [--data DATA_DIR] [--rounds 3] [--clip 0.1] [--features fusion]

Without --data it generates the default synthetic factories (`coopasd synth` defaults) in a temporary
folder. DP here is central (the server adds the noise); with SecAgg+ the factories add shares of the same
noise, which gives the same distribution of the aggregate and the same epsilon.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coopasd.config.settings import RunConfig, with_overrides
from coopasd.data.synth import SynthConfig, generate
from coopasd.experiment.pipeline import run_federated
from coopasd.federation.privacy import noise_multiplier_for

EPSILONS = (8.0, 3.0, 1.0)


def settings(rounds: int, delta: float, clip: float) -> list[tuple[str, float, dict]]:
    """(label, target epsilon, [privacy] values) of every row."""
    rows: list[tuple[str, float, dict]] = [
        ("no protection", math.inf, {}),
        ("SecAgg+ only", math.inf, {"secure_aggregation": True}),
        (f"clip {clip:g} only", math.inf, {"dp_clip": clip}),
    ]
    for eps in EPSILONS:
        sigma = noise_multiplier_for(eps, delta, rounds)
        rows.append((f"DP epsilon {eps:g}", eps, {"dp_clip": clip, "dp_noise_multiplier": sigma}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="default: the synthetic default factories")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clip", type=float, default=0.1, help="L2 bound on each factory's round update")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--features", default="fusion", help="detector features (fusion, learned)")
    parser.add_argument("--rows", default="", help="comma-separated row numbers to run (default: all)")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            generate(SynthConfig(), data)
        base = with_overrides(RunConfig(), "detect", features=args.features)
        base = with_overrides(base, "federation", rounds=args.rounds, evaluate_every=0, aggregation="mean")
        base = with_overrides(base, "privacy", dp_delta=args.delta)
        table = Table(
            title=f"privacy vs utility: {args.rounds} rounds, {args.features} detector, delta {args.delta:g} ({data})"
        )
        for col in ("setting", "target epsilon", "noise multiplier", "clip", "reported epsilon", "official", "s"):
            table.add_column(col, justify="left" if col == "setting" else "right")
        rows = settings(args.rounds, args.delta, args.clip)
        wanted = {int(r) for r in args.rows.split(",") if r.strip()} or set(range(len(rows)))
        for i, (label, eps, values) in enumerate(rows):
            if i not in wanted:
                continue
            cfg = with_overrides(base, "privacy", **values)
            started = time.perf_counter()
            result = run_federated(data, Path(tmp) / f"run{i}", cfg)
            seconds = time.perf_counter() - started
            summary = result.summary() or {}
            reported = (summary.get("privacy") or {}).get("epsilon")
            cells = [
                label,
                f"{eps:g}",
                f"{values.get('dp_noise_multiplier', 0.0):.3f}",
                f"{values.get('dp_clip', 0.0):g}",
                "inf" if reported is None else f"{reported:.2f}",
                f"{100 * summary['official_score']:.2f}",
                f"{seconds:.0f}",
            ]
            print(" | ".join(cells), flush=True)
            table.add_row(*cells)
    console.print(table)


if __name__ == "__main__":
    main()
