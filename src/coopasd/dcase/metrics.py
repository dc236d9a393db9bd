"""DCASE 2023 Task 2 metrics, computed as the official evaluator does.

Per machine type and section:
- AUC(source): source-domain normal clips + ALL anomalous clips of the section;
- AUC(target): target-domain normal clips + ALL anomalous clips of the section;
- pAUC: all clips of the section, ``roc_auc_score(y, s, max_fpr=0.1)`` (McClish-standardized).
Official score: harmonic mean (values floored at machine epsilon) of every AUC(source),
AUC(target) and pAUC of every machine type and section.

Extra values per section and domain, not part of the official score: precision, recall and F1 of
the 0/1 decisions on that domain's clips (normal and anomalous), as the official evaluator reports
them, and pAUC of one domain (that domain's normal clips + all anomalous clips, the same clips as
AUC(domain); the 2023 evaluator has this line but leaves it commented out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats
from sklearn.metrics import roc_auc_score

from coopasd.errors import MetricsError

MAX_FPR = 0.1
_EPS = float(np.finfo(float).eps)


def _as_arrays(scores: Sequence[float], is_anomaly: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_anomaly, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise MetricsError(f"scores and labels must be 1-d of equal length, got {s.shape} and {y.shape}")
    if not np.isfinite(s).all():
        raise MetricsError("scores contain NaN or infinite values")
    return s, y


def _check_both_classes(y: np.ndarray, what: str) -> None:
    if y.all():
        raise MetricsError(f"{what}: no normal clips, AUC is undefined")
    if not y.any():
        raise MetricsError(f"{what}: no anomalous clips, AUC is undefined")


def domain_auc(scores: Sequence[float], is_anomaly: Sequence[bool], domains: Sequence[str], domain: str) -> float:
    """AUC of one domain: that domain's normal clips against all anomalous clips of the section."""
    s, y = _as_arrays(scores, is_anomaly)
    d = np.asarray(domains)
    keep = y | (d == domain)
    if not (keep & ~y).any():
        raise MetricsError(f"no normal clips of the {domain} domain, AUC({domain}) is undefined")
    _check_both_classes(y[keep], f"AUC({domain})")
    return float(roc_auc_score(y[keep], s[keep]))


def domain_pauc(
    scores: Sequence[float], is_anomaly: Sequence[bool], domains: Sequence[str], domain: str, max_fpr: float = MAX_FPR
) -> float:
    """pAUC of one domain: that domain's normal clips against all anomalous clips (not in the official score)."""
    s, y = _as_arrays(scores, is_anomaly)
    keep = y | (np.asarray(domains) == domain)
    _check_both_classes(y[keep], f"pAUC({domain})")
    return float(roc_auc_score(y[keep], s[keep], max_fpr=max_fpr))


def decision_quality(
    is_anomaly: Sequence[bool], decisions: Sequence[int], domains: Sequence[str], domain: str
) -> tuple[float, float, float]:
    """(precision, recall, F1) of the 0/1 decisions on one domain's clips, each denominator floored at
    machine epsilon as the official evaluator does (so an empty class gives 0, not NaN)."""
    y = np.asarray(is_anomaly, dtype=bool)
    d = np.asarray(decisions).astype(bool)
    keep = np.asarray(domains) == domain
    if y.shape != d.shape:
        raise MetricsError(f"labels and decisions must have equal length, got {y.shape} and {d.shape}")
    y, d = y[keep], d[keep]
    tp, fp, fn = float(np.sum(y & d)), float(np.sum(~y & d)), float(np.sum(y & ~d))
    precision = tp / max(tp + fp, _EPS)
    recall = tp / max(tp + fn, _EPS)
    return precision, recall, 2.0 * precision * recall / max(precision + recall, _EPS)


def pauc(scores: Sequence[float], is_anomaly: Sequence[bool], max_fpr: float = MAX_FPR) -> float:
    """Standardized partial AUC over all clips of a section (scikit-learn's ``max_fpr``)."""
    s, y = _as_arrays(scores, is_anomaly)
    _check_both_classes(y, "pAUC")
    return float(roc_auc_score(y, s, max_fpr=max_fpr))


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean with each value floored at machine epsilon, as the evaluator does."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise MetricsError("harmonic mean of no values")
    return float(scipy.stats.hmean(np.maximum(v, _EPS)))


@dataclass(frozen=True)
class SectionMetrics:
    """The three DCASE values of one machine type and section, with clip counts."""

    machine_type: str
    section: str
    auc_source: float
    auc_target: float
    pauc: float
    n_clips: int
    n_anomalies: int
    pauc_source: float | None = None  # extra: pAUC of source normals + all anomalies
    pauc_target: float | None = None  # extra: pAUC of target normals + all anomalies
    precision_source: float | None = None  # extra, from 0/1 decisions on the source clips
    precision_target: float | None = None
    recall_source: float | None = None
    recall_target: float | None = None
    f1_source: float | None = None
    f1_target: float | None = None

    @property
    def values(self) -> tuple[float, float, float]:
        return (self.auc_source, self.auc_target, self.pauc)


def section_metrics(
    machine_type: str,
    section: str,
    scores: Sequence[float],
    is_anomaly: Sequence[bool],
    domains: Sequence[str],
    max_fpr: float = MAX_FPR,
    decisions: Sequence[int] | None = None,
) -> SectionMetrics:
    """AUC(source), AUC(target) and pAUC of one section, the per-domain pAUC and, given the 0/1
    ``decisions``, per-domain precision, recall and F1; errors name the machine and section."""
    try:
        main = {d: domain_auc(scores, is_anomaly, domains, d) for d in ("source", "target")}
        overall = pauc(scores, is_anomaly, max_fpr)
        extra: dict[str, float] = {}
        for domain in ("source", "target"):
            extra[f"pauc_{domain}"] = domain_pauc(scores, is_anomaly, domains, domain, max_fpr)
            if decisions is not None:
                quality = decision_quality(is_anomaly, decisions, domains, domain)
                extra |= dict(zip((f"precision_{domain}", f"recall_{domain}", f"f1_{domain}"), quality, strict=True))
    except MetricsError as err:
        raise MetricsError(f"{machine_type} section {section}: {err}") from err
    return SectionMetrics(
        machine_type=machine_type,
        section=section,
        auc_source=main["source"],
        auc_target=main["target"],
        pauc=overall,
        n_clips=len(scores),
        n_anomalies=int(np.sum(np.asarray(is_anomaly, dtype=bool))),
        **extra,
    )


def summarize(sections: Sequence[SectionMetrics]) -> dict:
    """The metrics.json body: official score, means, and per-machine/per-section values."""
    if not sections:
        raise MetricsError("no sections to summarize")
    src = [m.auc_source for m in sections]
    tgt = [m.auc_target for m in sections]
    pa = [m.pauc for m in sections]
    machines: dict[str, dict] = {}
    for machine in sorted({m.machine_type for m in sections}):
        own = [m for m in sections if m.machine_type == machine]
        machines[machine] = {
            "auc_source": harmonic_mean([m.auc_source for m in own]),
            "auc_target": harmonic_mean([m.auc_target for m in own]),
            "pauc": harmonic_mean([m.pauc for m in own]),
            "official_score": harmonic_mean([v for m in own for v in m.values]),
            "sections": {m.section: _section_dict(m) for m in own},
        }
    return {
        "official_score": harmonic_mean(src + tgt + pa),
        "harmonic_mean": {
            "auc_source": harmonic_mean(src),
            "auc_target": harmonic_mean(tgt),
            "pauc": harmonic_mean(pa),
        },
        "arithmetic_mean": {
            "auc_source": float(np.mean(src)),
            "auc_target": float(np.mean(tgt)),
            "pauc": float(np.mean(pa)),
            "all": float(np.mean(src + tgt + pa)),
        },
        "machines": machines,
    }


def _section_dict(m: SectionMetrics) -> dict:
    return {k: v for k, v in asdict(m).items() if k not in ("machine_type", "section") and v is not None}


def official_score(summary: Mapping) -> float:
    return float(summary["official_score"])
