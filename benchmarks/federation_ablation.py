"""Which federated setting keeps the shared encoder best under completely non-iid factories:
the learned-detector official score of each setting (one machine type per factory), with the
centralized and local-only references measured the same way.

    .venv/bin/python benchmarks/federation_ablation.py --data runs/demo/data [--settings a;b]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coopasd.config.settings import RunConfig, with_overrides
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.experiment.pipeline import run_centralized, run_local
from coopasd.federation.simulation import run_simulated

SETTINGS: dict[str, dict[str, dict]] = {
    "FedAvg (sample-weighted), full encoder": {"federation": {"strategy": "fedavg"}},
    "FedAvg, no round-wise lr decay": {"federation": {"strategy": "fedavg", "lr_decay": 1.0}},
    "FedProx (mu 0.01)": {"federation": {"strategy": "fedprox", "proximal_mu": 0.01}},
    "FedAvgM (server momentum 0.9, lr 1.0)": {"federation": {"strategy": "fedavgm"}},
    "FedAdam (eta 0.01)": {"federation": {"strategy": "fedadam", "server_lr": 0.01}},
    "FedAvg, norms local (FedBN-style)": {"federation": {"strategy": "fedavg", "share": "no_norm"}},
    "FedAvgM + 1 local personalization epoch": {"federation": {"strategy": "fedavgm", "personalize_epochs": 1}},
    "FedAvgM + 2 local personalization epochs": {"federation": {"strategy": "fedavgm", "personalize_epochs": 2}},
    "FedAvgM + personalization, norms local": {
        "federation": {"strategy": "fedavgm", "personalize_epochs": 1, "share": "no_norm"}
    },
    "FedAvgM + personalization, no lr decay": {
        "federation": {"strategy": "fedavgm", "personalize_epochs": 1, "lr_decay": 1.0}
    },
    "FedAvgM + personalization, 2 local epochs per round": {
        "federation": {"strategy": "fedavgm", "personalize_epochs": 1, "local_epochs": 2}
    },
    "FedAvg, LoRA rank 8 only (backbone frozen)": {
        "federation": {"strategy": "fedavg", "share": "lora"},
        "model": {"lora_rank": 8},
        "train": {"freeze_backbone": True},
    },
}


def configure(base: RunConfig, overrides: dict[str, dict]) -> RunConfig:
    cfg = base
    for section, values in overrides.items():
        cfg = with_overrides(cfg, section, **values)
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--settings", default="", help="semicolon-separated setting names (default: all)")
    parser.add_argument("--features", default="learned", help="detector features to score with")
    parser.add_argument("--references", action="store_true", help="also run centralized and local-only")
    args = parser.parse_args()
    base = with_overrides(RunConfig(), "detect", features=args.features)
    base = with_overrides(base, "federation", evaluate_every=0)
    console = Console()
    table = Table(title=f"federated settings on {args.data} ({args.features} detector)")
    for col in ("setting", "official", "sec/round", "MB up per factory per round"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    if args.references:
        clips = discover_clips(args.data)
        datas = load_all(clips, parse_factories("", sorted({c.machine_type for c in clips})), base.data)
        for name, run in (("centralized (reference)", run_centralized), ("local-only (reference)", run_local)):
            score = run(datas, base).summary()["official_score"]
            print(f"{name} | {100 * score:.2f}", flush=True)
            table.add_row(name, f"{100 * score:.2f}", "", "")
    wanted = [s.strip() for s in args.settings.split(";") if s.strip()] or list(SETTINGS)
    for name in wanted:
        cfg = configure(base, SETTINGS[name])
        start = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            result, _ = run_simulated(cfg, args.data, Path(tmp))
        rounds = result["rounds"]
        per_round = sum(r["seconds"] for r in rounds) / len(rounds)
        up = sum(sum(r["bytes_up"].values()) / max(1, len(r["bytes_up"])) for r in rounds) / len(rounds)
        print(
            f"{name} | {100 * result['official_score']:.2f} | {per_round:.0f} s | {up / 1e6:.2f} MB "
            f"| total {time.time() - start:.0f} s",
            flush=True,
        )
        table.add_row(name, f"{100 * result['official_score']:.2f}", f"{per_round:.0f}", f"{up / 1e6:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
