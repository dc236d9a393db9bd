"""Every detector route measured on one data tree: official score (and per machine) of the
centralized and local-only modes, so the default can be the best one and the table in the
README can be checked.

    .venv/bin/python benchmarks/learned_routes.py --data runs/demo/data [--routes a,b] [--epochs N]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from coopasd.config.settings import RunConfig, with_overrides
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.experiment.pipeline import run_centralized, run_local

ROUTES: dict[str, dict[str, dict]] = {
    "logmel kNN (floor)": {"detect": {"features": "logmel"}},
    "scratch, mean, last layer": {
        "model": {"checkpoint": "none", "pooling": "mean", "layer": -1},
        "detect": {"features": "learned"},
    },
    "scratch, mean_freq, layer 1": {"model": {"checkpoint": "none"}, "detect": {"features": "learned"}},
    "pretrained, no fine-tuning": {"train": {"epochs": 0}, "detect": {"features": "learned"}},
    "pretrained, mean, last layer": {"model": {"pooling": "mean", "layer": -1}, "detect": {"features": "learned"}},
    "pretrained, mean_freq, layer 1": {"detect": {"features": "learned"}},
    "pretrained, no pseudo-anomalies": {"train": {"pseudo_anomalies": False}, "detect": {"features": "learned"}},
    "scratch + logmel fusion": {"model": {"checkpoint": "none"}},
    "pretrained, no pseudo-anomalies + logmel fusion": {"train": {"pseudo_anomalies": False}},
    "pretrained + logmel fusion (default)": {},
}


def configure(overrides: dict[str, dict], epochs: int | None) -> RunConfig:
    cfg = RunConfig()
    for section, values in overrides.items():
        cfg = with_overrides(cfg, section, **values)
    if epochs is not None and "epochs" not in overrides.get("train", {}):
        cfg = with_overrides(cfg, "train", epochs=epochs)
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--routes", default="", help="semicolon-separated route names (default: all)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--modes", default="centralized,local")
    args = parser.parse_args()
    clips = discover_clips(args.data)
    machines = sorted({c.machine_type for c in clips})
    datas = load_all(clips, parse_factories("", machines), RunConfig().data)
    wanted = [r.strip() for r in args.routes.split(";") if r.strip()] or list(ROUTES)
    console = Console()
    table = Table(title=f"detector routes on {args.data}")
    for col in ("route", "mode", "official", *machines, "seconds"):
        table.add_column(col, justify="left" if col in ("route", "mode") else "right")
    for name in wanted:
        cfg = configure(ROUTES[name], args.epochs)
        for mode in args.modes.split(","):
            start = time.time()
            result = (run_centralized if mode == "centralized" else run_local)(datas, cfg)
            summary = result.summary()
            row = [f"{100 * summary['machines'][m]['official_score']:.1f}" for m in machines]
            table.add_row(name, mode, f"{100 * summary['official_score']:.2f}", *row, f"{time.time() - start:.0f}")
            print(f"{name} | {mode} | {100 * summary['official_score']:.2f} | " + " ".join(row), flush=True)
    console.print(table)
    console.print(f"train config: {dataclasses.asdict(RunConfig().train)}")


if __name__ == "__main__":
    main()
