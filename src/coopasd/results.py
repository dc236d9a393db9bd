"""What a run ends with, in memory: each factory's detector and scores, each mode's result, the
comparison of the modes. Pure values and arithmetic; :mod:`coopasd.report` writes them."""

from __future__ import annotations

from dataclasses import dataclass, field

from coopasd.detect import FactoryModel
from coopasd.errors import MetricsError
from coopasd.evaluation import ScoredRun, SectionScores
from coopasd.metrics import summarize

MODES = ("federated", "centralized", "local")


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
        """``metrics.json``'s content, or None where every test label is hidden."""
        sections = self.run.section_metrics()
        if not sections:
            return None
        return summarize(sections) | {"skipped_clips": list(self.run.skipped)} | self.extra


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
        """``comparison.json``: official score and per-machine metrics per mode, and the differences."""
        modes = self.summaries()
        fed, cen, loc = (modes[m]["official_score"] for m in MODES)
        return {
            "modes": {m: {"official_score": s["official_score"], "machines": s["machines"]} for m, s in modes.items()},
            "federated_vs_centralized_percent": 100 * (fed - cen) / cen,
            "federated_vs_local_points": 100 * (fed - loc),
            "rounds": modes["federated"]["rounds"],
            "bytes_per_transfer": self.bytes_per_transfer,
        }
