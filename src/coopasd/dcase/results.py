"""What a run ends with, in memory: each factory's detector and scores, each mode's result, the
comparison of the modes. Pure values and arithmetic; :mod:`coopasd.rundir.writer` writes them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from coopasd.dcase.evaluation import ScoredRun, SectionScores
from coopasd.dcase.metrics import harmonic_mean, summarize
from coopasd.detect.detectors import FactoryModel
from coopasd.errors import MetricsError

MODES = ("federated", "centralized", "local")
METRICS = ("auc_source", "auc_target", "pauc", "official_score")  # per machine type, in comparison.json


@dataclass
class FactoryResult:
    """One factory at the end of a run: its saved detector, its scored test clips, its skipped clips."""

    model: FactoryModel
    sections: list[SectionScores]
    skipped: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.model.name


@dataclass
class ModeResult:
    """One run of the pipeline: ``mode`` is baseline, centralized, local or federated.

    ``extra`` goes into ``metrics.json`` beside the metrics: training history, where the encoder
    started and, federated, the rounds, the strategy and what was shared.
    """

    mode: str
    run: ScoredRun
    models: list[FactoryModel] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @classmethod
    def of_factories(cls, mode: str, factories: list[FactoryResult], extra: dict) -> ModeResult:
        sections = [s for f in factories for s in f.sections]
        run = ScoredRun(sections, [s for f in factories for s in f.skipped])
        return cls(mode, run, [f.model for f in factories], extra)

    def summary(self) -> dict | None:
        """``metrics.json``'s content, or None where every test label is hidden: the metrics, the
        skipped clips, the mode, each section's decision threshold (``"machine/section"``), each section's
        member weights where they were validated, and ``extra``."""
        sections = self.run.section_metrics()
        if not sections:
            return None
        thresholds = {
            f"{s.machine_type}/{s.section}": float(s.threshold) for s in self.run.sections if np.isfinite(s.threshold)
        }
        units = {m.name: sorted(m.detectors) for m in self.models}  # each factory's "machine/section" units
        weights = {  # [detect] member_weights = "validated": each section's member weights
            key: dict(det.weights) for m in self.models for key, det in m.detectors.items() if det.weights is not None
        }
        return (
            summarize(sections)
            | {"skipped_clips": list(self.run.skipped), "mode": self.mode, "thresholds": thresholds}
            | ({"factory_units": units} if units else {})
            | ({"member_weights": weights} if weights else {})
            | self.extra
        )


@dataclass
class Comparison:
    """Federated, centralized and local-only on the same data and seeds."""

    modes: dict[str, ModeResult]
    bytes_per_transfer: dict[str, int]

    def summaries(self) -> dict[str, dict]:
        out = {}
        for mode, result in self.modes.items():
            summary = result.summary()
            if summary is None:
                raise MetricsError(f"{mode}: test labels are hidden; a comparison needs labels or ground truth")
            out[mode] = summary
        return out

    def summary(self) -> dict:
        """``comparison.json``: :func:`compare_modes`, the federated rounds and the bytes per transfer."""
        modes = self.summaries()
        return compare_modes(modes) | {
            "rounds": modes["federated"].get("rounds", []),
            "bytes_per_transfer": self.bytes_per_transfer,
        }


def compare_modes(modes: dict[str, dict]) -> dict:
    """The modes' ``metrics.json`` summaries side by side: per mode the official score and per-machine
    metrics; federated vs centralized in percent (relative change) and vs local-only in points, overall
    and per machine type and metric."""
    fed, cen, loc = (modes[m] for m in MODES)

    def percent(f: float, c: float) -> float:
        return 100 * (f - c) / c

    differences = {
        machine: {
            metric: {
                "vs_centralized_percent": percent(values[metric], cen["machines"][machine][metric]),
                "vs_local_points": 100 * (values[metric] - loc["machines"][machine][metric]),
            }
            for metric in METRICS
        }
        for machine, values in fed["machines"].items()
    }
    return {
        "modes": {m: {"official_score": s["official_score"], "machines": s["machines"]} for m, s in modes.items()},
        "federated_vs_centralized_percent": percent(fed["official_score"], cen["official_score"]),
        "federated_vs_local_points": 100 * (fed["official_score"] - loc["official_score"]),
        "differences": differences,
    } | ({"factories": factory_gains(modes)} if "factory_units" in fed else {})


def factory_score(summary: dict, units: list[str]) -> float:
    """One factory's official score in a mode: the harmonic mean of AUC(source), AUC(target) and
    pAUC over its own units (``machine/section``), from that mode's ``metrics.json`` summary."""
    values = []
    for unit in units:
        machine, section = unit.rsplit("/", 1)
        own = summary["machines"][machine]["sections"][section]
        values += [own["auc_source"], own["auc_target"], own["pauc"]]
    return harmonic_mean(values)


def factory_gains(modes: dict[str, dict]) -> dict[str, dict]:
    """What joining gave each factory: its units, its official score in every mode and
    ``gain_points`` = 100 x (federated - its local-only model); ``vs_centralized_points`` likewise."""
    out = {}
    for name, units in modes["federated"]["factory_units"].items():
        scores = {mode: factory_score(modes[mode], units) for mode in MODES}
        out[name] = {
            "units": list(units),
            **scores,
            "gain_points": 100 * (scores["federated"] - scores["local"]),
            "vs_centralized_points": 100 * (scores["federated"] - scores["centralized"]),
        }
    return out
