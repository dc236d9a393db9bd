"""Does a member that pooled data makes stronger exist? A frame autoencoder trained on one unit's clips
(what local-only can do) against one trained on every unit's clips (the ceiling of sharing: what
centralized training, and FedAvg at best, reach), alone and fused with the shipped detector.

The autoencoder is the DCASE baseline's: 5 log-mel frames (128 bins, the project's Kaldi fbank) in,
a bottleneck of 8, the same 640 values out; a clip's score is its mean squared reconstruction error
over the median error of its section's normal training clips. Fused scores average it with the
frozen members (aisfx + logmel, the project's kNN detectors) or with the shipped detector's scores
read from a run's submission files (``--ensemble``: a ``federated/factories`` folder of
``benchmarks/cooperation.py``), weights as printed.

    .venv/bin/python benchmarks/frame_autoencoder.py --plant runs/coop/dev/few-clip/data \
        --ensemble runs/coop/dev/few-clip/federated/factories [--epochs 20 --seeds 0,1,2]

Prints one row per training pool (``one unit`` or ``all units``) and seed, official score (%) of each
scoring; the last rows are the mean over seeds and the pooled-minus-local gain. Nothing here changes
the product: it measures whether pooled training can pay at all on a plant.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from coopasd.config.settings import DetectConfig, ModelConfig
from coopasd.data.audio import load_audio
from coopasd.data.layout import Clip, discover_clips, group_by_machine_section
from coopasd.dcase.metrics import section_metrics, summarize
from coopasd.detect.detectors import fit_detector
from coopasd.learn.autoencoder import train_frame_autoencoder
from coopasd.model.embed import clip_features, frozen_encoders
from coopasd.model.frame_autoencoder import FrameAutoencoder

Unit = tuple[str, str]  # (machine type, section)


@dataclass
class UnitData:
    """One unit's clips and waves."""

    train: list[Clip]
    test: list[Clip]
    train_waves: np.ndarray
    test_waves: np.ndarray


def load_plant(root: Path) -> dict[Unit, UnitData]:
    units: dict[Unit, UnitData] = {}
    for key, group in group_by_machine_section(discover_clips(root)).items():
        train = [c for c in group if c.split == "train"]
        test = [c for c in group if c.split == "test"]
        units[key] = UnitData(
            train, test, np.stack([load_audio(c.path) for c in train]), np.stack([load_audio(c.path) for c in test])
        )
    return units


def errors(ae: FrameAutoencoder, waves: np.ndarray) -> np.ndarray:
    """Mean squared reconstruction error of each clip (the member's feature, before its log)."""
    return np.exp(ae.clip_features(waves)[:, 0])


FROZEN = DetectConfig(features="aisfx+logmel")  # the shipped frozen members


def frozen_scores(unit: UnitData, frozen: dict) -> np.ndarray:
    """The shipped frozen members (aisfx + logmel kNN, leave-one-out normalized) fused, on the test clips."""
    train = clip_features(None, unit.train_waves, ModelConfig(), FROZEN, frozen=frozen)
    test = clip_features(None, unit.test_waves, ModelConfig(), FROZEN, frozen=frozen)
    is_target = np.array([c.domain == "target" for c in unit.train])
    return fit_detector(train, is_target, FROZEN).score(test)


def error_detector_scores(unit: UnitData, train_errors: np.ndarray, test_errors: np.ndarray) -> np.ndarray:
    """The product's ``ae`` member: the log reconstruction error as a one-value feature of the kNN detector
    (source and target banks, leave-one-out normalized)."""
    is_target = np.array([c.domain == "target" for c in unit.train])
    det = fit_detector({"ae": np.log(train_errors)[:, None]}, is_target, DetectConfig(features="ae"))
    return det.score({"ae": np.log(test_errors)[:, None]})


def submission_scores(folder: Path, unit: Unit, clips: list[Clip]) -> np.ndarray:
    machine, section = unit
    files = list(folder.rglob(f"anomaly_score_{machine}_section_{section}_test.csv"))
    if len(files) != 1:
        raise SystemExit(f"{folder}: expected one score file of {machine} section {section}, found {len(files)}")
    with files[0].open(newline="") as handle:
        scores = {row[0]: float(row[1]) for row in csv.reader(handle)}
    return np.array([scores[c.name] for c in clips])


def official(units: dict[Unit, UnitData], scores: dict[Unit, np.ndarray]) -> float:
    sections = [
        section_metrics(m, s, scores[(m, s)], [c.label == "anomaly" for c in u.test], [str(c.domain) for c in u.test])
        for (m, s), u in units.items()
    ]
    return 100 * summarize(sections)["official_score"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plant", type=Path, required=True, help="a plant folder (DCASE layout)")
    parser.add_argument("--ensemble", type=Path, default=None, help="a run's factories folder (its score files)")
    parser.add_argument("--epochs", type=int, default=10, help="as [train] epochs")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    torch.set_num_threads(2)
    units = load_plant(args.plant)
    encoders = frozen_encoders(FROZEN)
    frozen = {k: frozen_scores(u, encoders) for k, u in units.items()}
    shipped = {k: submission_scores(args.ensemble, k, u.test) for k, u in units.items()} if args.ensemble else {}
    scorings: dict[str, Callable[[Unit, np.ndarray], np.ndarray]] = {
        "AE alone": lambda k, ae: ae,
        "AE kNN": lambda k, ae: knn_ae[k],
        "frozen 2/3 + AE 1/3": lambda k, ae: (2 * frozen[k] + ae) / 3,
    }
    if shipped:
        scorings["shipped 3/4 + AE 1/4"] = lambda k, ae: (3 * shipped[k] + ae) / 4
        scorings["shipped 1/2 + AE 1/2"] = lambda k, ae: (shipped[k] + ae) / 2
    title = f"{args.plant}: official score (%); frozen members alone {official(units, frozen):.2f}"
    if shipped:
        title += f", shipped detector alone {official(units, shipped):.2f}"
    table = Table(title=title)
    for col in ("AE trained on", "seed", *scorings):
        table.add_column(col, justify="right")
    means: dict[str, list[float]] = {}
    knn_ae: dict[Unit, np.ndarray] = {}
    for pool in ("one unit", "all units"):
        rows = []
        for seed in (int(s) for s in args.seeds.split(",")):
            models: dict[tuple[Unit, ...], FrameAutoencoder] = {}
            ae: dict[Unit, np.ndarray] = {}
            knn_ae.clear()
            for key, unit in units.items():
                members = (key,) if pool == "one unit" else tuple(units)
                if members not in models:
                    torch.manual_seed(seed)  # as attach_autoencoder: the start is the seed's
                    models[members] = FrameAutoencoder()
                    waves = np.concatenate([units[m].train_waves for m in members])
                    train_frame_autoencoder(models[members], waves, args.epochs, seed, device="cpu")
                train_errors, test_errors = (
                    errors(models[members], unit.train_waves),
                    errors(models[members], unit.test_waves),
                )
                ae[key] = test_errors / np.median(train_errors)
                knn_ae[key] = error_detector_scores(unit, train_errors, test_errors)
            row = [official(units, {k: fn(k, ae[k]) for k in units}) for fn in scorings.values()]
            rows.append(row)
            table.add_row(pool, str(seed), *(f"{v:.2f}" for v in row))
        means[pool] = list(np.mean(rows, axis=0))
        table.add_row(pool, "mean", *(f"{v:.2f}" for v in means[pool]), style="bold")
    gain = [p - o for p, o in zip(means["all units"], means["one unit"], strict=True)]
    table.add_row("pooled - one unit", "", *(f"{v:+.2f}" for v in gain), style="bold")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
