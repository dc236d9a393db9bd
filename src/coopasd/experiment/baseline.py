"""The non-learned floor: log-mel statistics + kNN per machine type and section.

Clip features are the per-band mean and standard deviation of the 128-bin Kaldi log-mel
fbank. Per machine type and section they are z-scored with the training clips' statistics,
and a Euclidean k-NN detector with source and target banks scores each test clip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from coopasd.config.settings import BaselineConfig, DataConfig, DetectConfig
from coopasd.data.audio import load_many
from coopasd.data.layout import Clip, group_by_machine_section
from coopasd.dcase.evaluation import ScoredRun, SectionScores
from coopasd.detect.detectors import KnnDetector, require_distinct
from coopasd.errors import LayoutError
from coopasd.model.embed import logmel_features


def _load_features(
    clips: Sequence[Clip], data: DataConfig, progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, list[Clip], list[str]]:
    """Log-mel statistics of the clips that load; returns features, kept clips, skipped messages."""
    loaded = load_many([c.path for c in clips], data.sample_rate, data.seconds, data.on_error, progress)
    by_path = {c.path: c for c in clips}
    kept = [by_path[p] for p in loaded.paths]
    return logmel_features(loaded.waves), kept, [str(e) for e in loaded.skipped]


def run_baseline(
    clips: Sequence[Clip],
    data: DataConfig,
    cfg: BaselineConfig,
    progress: Callable[[int], None] | None = None,
) -> ScoredRun:
    """Fit one detector per machine type and section on its normal training clips; score its test clips."""
    sections: list[SectionScores] = []
    skipped: list[str] = []
    for (machine, section), group in group_by_machine_section(clips).items():
        train = [c for c in group if c.split == "train" and c.label == "normal"]
        test = [c for c in group if c.split == "test"]
        feats, kept, bad = _load_features(train + test, data, progress)
        skipped += bad
        is_train = np.array([c.split == "train" for c in kept], dtype=bool)
        source = feats[is_train & np.array([c.domain == "source" for c in kept])]
        target = feats[is_train & np.array([c.domain == "target" for c in kept])]
        if len(source) == 0:
            raise LayoutError(group[0].path.parent.parent, f"{machine} section {section}: no source training clips")
        detector = KnnDetector(
            DetectConfig(features="logmel", metric="euclidean", standardize=True, k=cfg.k, normalize=cfg.normalize)
        )
        require_distinct(detector.fit(source, target, f"{machine}/{section}"), len(source) + len(target))
        test_kept = [c for c in kept if c.split == "test"]
        scores = detector.score(feats[~is_train]) if test_kept else np.zeros(0)
        sections.append(SectionScores(machine, section, test_kept, scores, detector.decide(scores), detector.threshold))
    return ScoredRun(sections, skipped)


__all__ = ["run_baseline"]
