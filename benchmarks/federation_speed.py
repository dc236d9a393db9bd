"""Seconds per federated round and their split (local training vs Flower and the rest), bytes
per round for the full encoder vs LoRA adapters, and how round time grows with 2, 4, 8, 16
factories (Flower Simulation Engine on this machine; factories share its cores).

    .venv/bin/python benchmarks/federation_speed.py [--factories 2,4,8,16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coopasd.config.settings import RunConfig, with_overrides
from coopasd.data.synth import SynthConfig, generate
from coopasd.federation.records import transfer_bytes
from coopasd.federation.simulation import run_simulated
from coopasd.model.checkpoint import initial_encoder


def factory_tree(root: Path, n: int) -> Path:
    """``n`` machine folders (copies of five synthetic machines under new names): one per factory."""
    base = root / "base"
    generate(SynthConfig(seconds=1.0, train_source=18, train_target=2, test_per_domain=10), base)
    machines = SynthConfig().machines
    tree = root / f"tree{n}"
    for i in range(n):
        shutil.copytree(base / machines[i % len(machines)], tree / f"{machines[i % len(machines)]}{i:02d}")
    return tree


def round_config(rounds: int) -> RunConfig:
    """The benchmarked federation: learned tiny features, ``rounds`` rounds of one local epoch, metric at the end."""
    cfg = with_overrides(RunConfig(), "detect", features="learned")
    return with_overrides(cfg, "federation", rounds=rounds, local_epochs=1, evaluate_every=0)


def transfer_sizes(cfg: RunConfig) -> dict[str, int]:
    """Bytes of one model transfer (one factory, one direction): full encoder vs LoRA adapters."""
    return transfer_bytes(initial_encoder(cfg.model, 0)[0])


def measure_rounds(cfg: RunConfig, n: int, root: Path) -> dict[str, float]:
    """One simulated federation of ``n`` factories under ``root``: seconds per round (round 1, with
    actor start-up, left out when there are more), local training seconds summed over factories,
    training's share of the round's wall time and the rest (Flower, I/O, start-up), MB per round."""
    cores = os.cpu_count() or 1
    tree = factory_tree(root / f"n{n}", n)
    start = time.time()
    result, _ = run_simulated(cfg, tree, root / f"run{n}")
    rounds = result["rounds"][1:] or result["rounds"]
    per_round = sum(r["seconds"] for r in rounds) / len(rounds)
    training = sum(sum(r["train_seconds"].values()) for r in rounds) / len(rounds)
    wall_training = training / min(cores, n)
    return {
        "factories": n,
        "s_per_round": per_round,
        "train_s_sum": training,
        "training_share": wall_training / per_round,
        "other_s": max(0.0, per_round - wall_training),
        "mb_per_round": 2 * n * transfer_sizes(cfg)["full_encoder"] / 1e6,
        "total_s": time.time() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factories", default="2,4,8,16")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cfg = round_config(args.rounds)
    console = Console()
    cores = os.cpu_count() or 1
    table = Table(title=f"federated round time on this machine ({cores} cores; 20 x 1 s training clips per factory)")
    for col in (
        "factories",
        "s/round",
        "local training (s, sum)",
        "training share",
        "other (Flower, I/O, startup)",
        "MB per round (up + down, all factories)",
    ):
        table.add_column(col, justify="right")
    sizes = transfer_sizes(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.factories.split(",")):
            r = measure_rounds(cfg, n, Path(tmp))
            table.add_row(
                str(n),
                f"{r['s_per_round']:.1f}",
                f"{r['train_s_sum']:.1f}",
                f"{r['training_share']:.0%}",
                f"{r['other_s']:.1f}",
                f"{r['mb_per_round']:.1f}",
            )
            print(
                f"{n} factories: {r['s_per_round']:.1f} s/round, training {r['train_s_sum']:.1f} s, "
                f"total {r['total_s']:.0f} s",
                flush=True,
            )
    console.print(table)
    size = Table(title="bytes per model transfer (one factory, one direction)")
    size.add_column("what travels")
    size.add_column("MB", justify="right")
    for name, value in sizes.items():
        size.add_row(name, f"{value / 1e6:.3f}")
    console.print(size)


if __name__ == "__main__":
    main()
