"""One training per mode, several detectors: the official score of member subsets of one trained detector.

A fused detector's score is the mean of its members' normalized scores, so every subset of the members
(e.g. ``learned+logmel`` out of ``learned+aisfx+logmel``) can be scored from one run, with the same
trained encoders, instead of training once per subset as ``benchmarks/generalization.py`` does.

    .venv/bin/python benchmarks/fusion_subsets.py --data runs/data --config configs/aisfx_tuned.toml \\
        [--features learned+aisfx+logmel] [--subsets "learned;learned+logmel;learned+aisfx+logmel"] \\
        [--modes federated,centralized,local]

Prints one row per subset (official score in %, per mode) and the seconds each mode took.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from coopasd.config.settings import detector_members, load_config
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips, group_by_machine_section
from coopasd.data.partition import factories_of
from coopasd.dcase.evaluation import ScoredRun, SectionScores
from coopasd.dcase.metrics import summarize
from coopasd.detect.detectors import section_key
from coopasd.experiment.pipeline import run_mode


def subset_scores(models, datas, subsets: list[str]) -> dict[str, float]:
    """Official score of each subset of the trained detectors' members, over every factory's test clips."""
    sections: dict[str, list[SectionScores]] = {s: [] for s in subsets}
    by_name = {m.name: m for m in models}
    for data in datas:
        model = by_name[data.factory.name]
        features = model.features(data.test_waves)
        for (machine, section), group in group_by_machine_section(data.test_clips).items():
            rows = np.array([(c.machine_type, c.section) == (machine, section) for c in data.test_clips])
            det = model.detectors[section_key(machine, section)]
            member = {name: m.score(features[name][rows]) for name, m in det.members.items()}
            for subset in subsets:
                scores = np.mean([member[n] for n in detector_members(subset)], axis=0)
                sections[subset].append(SectionScores(machine, section, group, scores, None, float("nan")))
    return {s: summarize(ScoredRun(secs, []).section_metrics())["official_score"] for s, secs in sections.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--features", default="learned+aisfx+logmel", help="the trained detector's members")
    parser.add_argument("--subsets", default="learned;learned+logmel;learned+aisfx+logmel;aisfx+logmel")
    parser.add_argument("--modes", default="federated,centralized,local")
    parser.add_argument("--evaluate-every", type=int, default=0)
    args = parser.parse_args()
    console = Console()
    cfg = load_config(
        args.config, detect={"features": args.features}, federation={"evaluate_every": args.evaluate_every}
    )
    subsets, modes = args.subsets.split(";"), args.modes.split(",")
    clips = discover_clips(args.data)
    factories = factories_of(cfg.partition.factories, ((c.machine_type, c.section) for c in clips))
    datas = load_all(clips, factories, cfg.data)
    results, seconds = {}, {}
    for mode in modes:
        start = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            result = run_mode(mode, args.data, Path(tmp) / mode, cfg)
        results[mode] = subset_scores(result.models, datas, subsets)
        whole = subset_scores(result.models, datas, [args.features])[args.features]
        own = result.summary()["official_score"]  # federated: read back from the factories' submission files
        console.print(f"{mode}: {args.features} recomputed {100 * whole:.3f}, as the run scored it {100 * own:.3f}")
        seconds[mode] = time.time() - start
        for subset, score in results[mode].items():
            console.print(f"{args.data.name} | {subset} | {mode} | {100 * score:.2f}")
    table = Table(title=f"official score (%) on {args.data}: subsets of one trained {args.features} detector")
    for col in ("detector", *modes):
        table.add_column(col, justify="left" if col == "detector" else "right")
    for subset in subsets:
        table.add_row(subset, *[f"{100 * results[m][subset]:.2f}" for m in modes])
    table.add_row("seconds", *[f"{seconds[m]:.0f}" for m in modes])
    console.print(table)


if __name__ == "__main__":
    main()
