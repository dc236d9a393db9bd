"""Member weights of a fused detector, decided from a section's normal training clips only.

``[detect] member_weights = "validated"``: per machine type and section, a share of each domain's
normal training clips is held back (``validation_share``; a domain keeps at least two clips to fit
on); every member is fitted on the rest; each held-back clip gets one perturbed copy
(:func:`coopasd.data.augment.pseudo_anomaly`, the kinds of ``PSEUDO_ANOMALIES`` cycled, seeded); each
member scores the held-back normals and their perturbed copies, and its weight is how far its AUC
lies above chance, ``max(AUC - 0.5, 0)``, over the sum of all members' (the plain mean where no
member separates anything). A member that cannot tell the pseudo-anomalies apart weighs nothing;
among members that all separate well the weights stay near equal. Test clips and their labels are
never looked at. The detector that scores is then fitted on ALL the section's clips
(:func:`coopasd.detect.detectors.fit_detector` with these weights).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from coopasd.config.settings import DetectConfig
from coopasd.data.augment import PSEUDO_ANOMALIES, pseudo_anomaly
from coopasd.detect.detectors import KnnDetector, member_settings

log = logging.getLogger(__name__)

MIN_FIT_CLIPS = 2  # a domain keeps at least this many clips to fit on; smaller domains hold none back

Featurize = Callable[[np.ndarray], dict[str, np.ndarray]]  # (m, samples) waves -> member -> (m, d) features


def section_seed(seed: int, key: str) -> int:
    """The seed of section ``key`` (``machine/section``): the run's seed plus the key's own offset, so a
    section holds back the same clips in every mode and factory grouping."""
    return seed + sum(map(ord, key))


def validation_split(is_target: np.ndarray, share: float, seed: int) -> np.ndarray:
    """``(n,)`` bool: the clips held back. Per domain ``round(share * n)`` clips, at least one, drawn at
    random (``seed``), while at least ``MIN_FIT_CLIPS`` stay to fit on; a smaller domain holds none back."""
    is_target = np.asarray(is_target, dtype=bool)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(is_target), dtype=bool)
    for domain in (False, True):
        rows = np.flatnonzero(is_target == domain)
        count = min(max(1, math.floor(share * len(rows) + 0.5)), len(rows) - MIN_FIT_CLIPS)
        if count > 0:
            held[rng.choice(rows, size=count, replace=False)] = True
    return held


def pseudo_anomalies(waves: np.ndarray, seed: int) -> np.ndarray:
    """One perturbed copy ``(m, samples)`` of each of ``(m, samples)`` normal waves, the kinds of
    ``PSEUDO_ANOMALIES`` cycled in order, random parameters from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    out = [
        pseudo_anomaly(torch.as_tensor(w, dtype=torch.float32), PSEUDO_ANOMALIES[i % len(PSEUDO_ANOMALIES)], g)
        for i, w in enumerate(waves)
    ]
    return np.stack([w.numpy() for w in out]).astype(np.float32) if out else np.zeros_like(waves, np.float32)


def auc_weights(aucs: Mapping[str, float]) -> dict[str, float]:
    """Member -> ``max(AUC - 0.5, 0)`` over their sum (equal shares where every member is at or below chance)."""
    gains = {name: max(float(auc) - 0.5, 0.0) for name, auc in aucs.items()}
    total = sum(gains.values())
    if total <= 0:
        return {name: 1.0 / len(gains) for name in gains}
    return {name: gain / total for name, gain in gains.items()}


def member_aucs(
    features: Mapping[str, np.ndarray],
    is_target: np.ndarray,
    held: np.ndarray,
    anomalies: Mapping[str, np.ndarray],
    cfg: DetectConfig,
    name: str = "section",
) -> dict[str, float]:
    """Each member's AUC of held-back normals (negatives) vs pseudo-anomalies (positives).

    ``features``: member -> ``(n, d)`` of the section's normal training clips; ``held``: ``(n,)`` bool,
    the clips left out of the fit; ``anomalies``: member -> ``(m, d)`` of the perturbed copies."""
    is_target = np.asarray(is_target, dtype=bool)
    fit = ~np.asarray(held, dtype=bool)
    out = {}
    for member, feats in features.items():
        det = KnnDetector(member_settings(member, cfg))
        det.fit(feats[fit & ~is_target], feats[fit & is_target], f"{name} {member} (validation fit)")
        normal, anomalous = det.score(feats[~fit]), det.score(anomalies[member])
        labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
        out[member] = float(roc_auc_score(labels, np.r_[normal, anomalous]))
    return out


def validated_weights(
    sections: Mapping[str, np.ndarray],
    waves: np.ndarray,
    is_target: np.ndarray,
    features: Mapping[str, np.ndarray],
    featurize: Featurize,
    cfg: DetectConfig,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Section key -> member weights, for the sections of ``sections`` (key -> ``(n,)`` row mask).

    ``waves`` ``(n, samples)``, ``is_target`` ``(n,)`` and ``features`` (member -> ``(n, d)``) are the
    factory's normal training clips; ``featurize`` computes the members' features of the perturbed
    copies (one call for all sections). A section too small to hold clips back is left out (plain mean).
    """
    if len(features) < 2:
        return {}
    is_target = np.asarray(is_target, dtype=bool)
    splits, copies = {}, []
    for key, rows in sections.items():
        held = validation_split(is_target[rows], cfg.validation_share, section_seed(seed, key))
        if not held.any():
            log.warning("%s: too few normal training clips to hold any back; its members are averaged", key)
            continue
        splits[key] = held
        copies.append(pseudo_anomalies(waves[rows][held], section_seed(seed, key)))
    if not splits:
        return {}
    perturbed = featurize(np.concatenate(copies))
    weights, start = {}, 0
    for key, held in splits.items():
        rows, stop = sections[key], start + int(held.sum())
        aucs = member_aucs(
            {m: f[rows] for m, f in features.items()},
            is_target[rows],
            held,
            {m: perturbed[m][start:stop] for m in features},
            cfg,
            key,
        )
        weights[key] = auc_weights(aucs)
        start = stop
        log.info(
            "%s: member weights %s (AUC of %d held-back normals vs their pseudo-anomalies: %s)",
            key,
            ", ".join(f"{m} {w:.2f}" for m, w in weights[key].items()),
            int(held.sum()),
            ", ".join(f"{m} {a:.3f}" for m, a in aucs.items()),
        )
    return weights
