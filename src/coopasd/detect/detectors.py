"""k-nearest-neighbour anomaly detectors over a factory's normal embeddings, and the saved
factory detector (:class:`FactoryModel`: encoder + embedding recipe + memory banks + thresholds).

Two memory banks per machine type and section: the source-domain and the target-domain
normal training clips. A clip's distance to a bank is the mean distance to its k nearest
members. By default each bank's distances are divided by that bank's typical leave-one-out
distance among its own members (no test statistics: one new clip can be scored alone), and
the anomaly score is the minimum over the two banks.

Decision threshold: a gamma distribution fitted to the leave-one-out scores of the normal
training clips, cut at its ``threshold_quantile`` (0.9 by default, the DCASE baseline's rule);
the empirical quantile is used where the fit fails.

Degenerate banks are handled explicitly, each with a warning naming the section (no silent
wrong scores): duplicate clips (embeddings within ``DUPLICATE_TOLERANCE`` of an earlier one)
count once; a bank's leave-one-out scale is floored at ``SCALE_FLOOR`` x the median distance
between its members; a bank holding a single distinct clip takes the scale of the section's
pooled banks; a section with no source-domain clips, or fewer than two distinct clips, is a
:class:`~coopasd.errors.DetectorError`; a ``k`` larger than a bank averages the whole bank.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.stats
import torch
from torch import nn

from coopasd.config.settings import DataConfig, DetectConfig, ModelConfig, build
from coopasd.errors import CoopasdError, DetectorError, ScoreError
from coopasd.model.aisfx import expected_weights_sha256, load_aisfx
from coopasd.model.aisfx_encoder import AisfxEncoder
from coopasd.model.checkpoint import (
    CheckpointError,
    checkpoint_bytes,
    load_state_strict,
    read_checkpoint,
)
from coopasd.model.embed import AISFX_WEIGHTS, clip_features
from coopasd.model.encoders import Encoder, encoder_for_file, wants_autoencoder

log = logging.getLogger(__name__)

Metric = Literal["cosine", "euclidean"]

DUPLICATE_TOLERANCE = 1e-5  # members closer than this x the bank's RMS norm are copies of one clip
SCALE_FLOOR = 0.01  # a bank's leave-one-out scale is at least this share of its median pairwise distance
_SCALE_SAMPLE = 512  # members used to estimate the median pairwise distance of a large bank
POOLED = "*"  # KnnDetector._bank_groups: all banks together


def _prepare(x: torch.Tensor, metric: Metric) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1) if metric == "cosine" else x


def _distances(queries: torch.Tensor, bank: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Cosine (of normalized rows: ``1 - q.b`` written as ``|q - b|^2 / 2``) or Euclidean distances, from the
    differences themselves: ``1 - q.b`` and the matmul form of cdist lose the small distances of near
    neighbours to float32 cancellation, so two correct implementations would disagree on them."""
    dist = torch.cdist(queries, bank, compute_mode="donot_use_mm_for_euclid_dist")
    return 0.5 * dist.square() if metric == "cosine" else dist


def _knn_mean(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of each row's ``k`` smallest finite distances (inf where a row has none)."""
    k = min(k, dist.shape[1])
    values = dist.topk(k, dim=1, largest=False).values
    finite = torch.isfinite(values)
    count = finite.sum(dim=1)
    mean = values.masked_fill(~finite, 0.0).sum(dim=1) / count.clamp_min(1)
    return torch.where(count > 0, mean, torch.full_like(mean, float("inf")))


def copy_groups(bank: torch.Tensor) -> torch.Tensor:
    """``(n,)`` long: for each member of ``bank`` ``(n, d)``, the index of the first member it is a copy of.

    A copy lies within ``DUPLICATE_TOLERANCE`` x the bank's RMS norm of an earlier member (computed in
    float64, so float32 round-off of one clip counts as a copy and real neighbours never do); a member
    that copies no earlier one is its own group. Only members whose projections on a fixed random
    direction lie within the tolerance of each other are compared, so this costs O(n d) for real banks.
    """
    n = bank.shape[0]
    groups = torch.arange(n)
    if n < 2:
        return groups
    b = bank.double()
    tol = DUPLICATE_TOLERANCE * max(float(b.pow(2).sum(1).mean().sqrt()), 1e-30)
    direction = torch.randn(b.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    projection = b @ (direction / direction.norm())
    order = projection.argsort()
    run = torch.cat([torch.zeros(1, dtype=torch.long), (projection[order].diff() > tol).long()]).cumsum(0)
    offset = 1  # members of one run lie next to each other in projection order: compare them pairwise
    while offset < n and bool((same := run[offset:] == run[:-offset]).any()):
        a, c = order[:-offset][same], order[offset:][same]
        close = (b[a] - b[c]).norm(dim=1) <= tol
        groups.scatter_reduce_(0, torch.maximum(a, c)[close], torch.minimum(a, c)[close], reduce="amin")
        offset += 1
    return groups


def _distinct(bank: torch.Tensor) -> torch.Tensor:
    """``(n,)`` bool: the first member of each group of copies."""
    return copy_groups(bank) == torch.arange(bank.shape[0])


def kmeans_bank(bank: torch.Tensor, clusters: int, metric: Metric, seed: int = 0) -> torch.Tensor:
    """``clusters`` k-means centroids ``(c, d)`` of ``bank`` ``(n, d)`` (the bank itself when it is small)."""
    if bank.shape[0] <= clusters:
        return bank
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=clusters, n_init=4, random_state=seed).fit(bank.numpy())
    return _prepare(torch.as_tensor(km.cluster_centers_, dtype=torch.float32), metric)


def mix_target_bank(target: torch.Tensor, source: torch.Tensor, per_clip: int, metric: Metric) -> torch.Tensor:
    """The target bank enlarged with ``0.5 * (t + s)`` for each target clip ``t`` and its
    ``per_clip`` nearest source clips ``s`` (GenRep-style; normal training clips only)."""
    if per_clip <= 0 or target.shape[0] == 0:
        return target
    nearest = _distances(target, source, metric).topk(min(per_clip, source.shape[0]), largest=False).indices
    mixes = 0.5 * (target.unsqueeze(1) + source[nearest])  # (n_t, per_clip, d)
    return torch.cat([target, _prepare(mixes.reshape(-1, target.shape[1]), metric)])


class KnnDetector:
    """Fit on normal embeddings of one machine type and section; score any clip alone.

    Settings from :class:`DetectConfig`: ``k``, ``metric``, ``standardize``, ``normalize``
    (``loo``: a bank's distances over its median leave-one-out distance; ``density``: the distance
    to each member over that member's mean distance to its ``density_k`` nearest bank members),
    ``source_bank`` (all clips or k-means centroids), ``target_mix`` and ``threshold_quantile``
    (``features`` is the caller's business). Nothing is learned from test clips.
    """

    def __init__(self, config: DetectConfig = DetectConfig()) -> None:
        self.config = config
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.banks: dict[str, torch.Tensor] = {}
        self.scales: dict[str, float] = {}
        self.member_scales: dict[str, torch.Tensor] = {}  # normalize = "density": one scale per bank member
        self.threshold: float = float("inf")
        self.name = "section"  # how warnings and errors call the detector (e.g. "fan/00 logmel")
        self.n_distinct = 0  # distinct normal training clips, source and target pooled
        self._groups: dict[str, torch.Tensor] = {}  # per bank, and POOLED: copy_groups(), computed once

    def fit(self, source: np.ndarray, target: np.ndarray | None = None, name: str = "") -> KnnDetector:
        """``source``: ``(n_s, d)`` normal source embeddings; ``target``: ``(n_t, d)`` or None/empty.

        ``name`` (e.g. "fan/00 logmel") is what the warnings about degenerate banks and the errors name.
        """
        self.name = name or "section"
        src = torch.as_tensor(np.asarray(source), dtype=torch.float32)
        if src.ndim != 2 or src.shape[0] == 0:
            raise ValueError(f"{self.name}: source bank needs at least one embedding, got shape {tuple(src.shape)}")
        tgt = torch.as_tensor(np.asarray(target), dtype=torch.float32) if target is not None else None
        if tgt is not None and (tgt.ndim != 2 or tgt.shape[0] == 0):
            tgt = None
        for label, x in (("source", src), ("target", tgt)):
            if x is not None and not torch.isfinite(x).all():
                raise DetectorError(f"{self.name}: the {label} training features hold NaN or infinite values")
        pooled = src if tgt is None else torch.cat([src, tgt])
        if self.config.standardize:  # over distinct clips: a copied recording does not shift the statistics
            distinct = pooled[_distinct(pooled)]
            self.mean = distinct.mean(dim=0)
            self.std = distinct.std(dim=0, unbiased=False).clamp_min(1e-6)
        cfg = self.config
        self._groups = {}
        source_bank = self._embed(src)
        self.banks = {"source": source_bank}
        self._groups["source"] = self._warn_copies(source_bank, "source")
        if cfg.source_bank == "kmeans":
            self.banks["source"] = kmeans_bank(source_bank, cfg.kmeans_clusters, cfg.metric)
            self._groups.pop("source")
        if tgt is not None:
            target_bank = self._embed(tgt)
            self.banks["target"] = mix_target_bank(target_bank, source_bank, cfg.target_mix, cfg.metric)
            self._groups["target"] = self._warn_copies(target_bank, "target")
            if self.banks["target"] is not target_bank:
                self._groups.pop("target")
        pooled_bank = torch.cat(list(self.banks.values()))[self._kept(POOLED)]
        self.n_distinct = int(pooled_bank.shape[0])
        if cfg.normalize != "none" and self.n_distinct < 2:
            raise DetectorError(
                f"{self.name}: {pooled.shape[0]} normal training clip(s) but {self.n_distinct} distinct: a detector "
                "needs at least 2 distinct clips to know what a normal distance is (copies of one recording count once)"
            )
        self._warn_large_k()
        if cfg.normalize == "density":
            pooled_density = self._densities(pooled_bank, torch.arange(len(pooled_bank))).median().reshape(1)
            self.member_scales = {
                name: self._densities(bank, self._bank_groups(name))
                if self._distinct_count(name) >= 2
                else pooled_density.expand(len(bank))
                for name, bank in self.banks.items()
            }
        self.scales = {name: self._bank_scale(name, pooled_bank) for name in self.banks}
        self.threshold = self._fit_threshold(self.training_scores())
        return self

    def _bank_groups(self, name: str) -> torch.Tensor:
        """:func:`copy_groups` of bank ``name`` (or of all banks pooled, ``POOLED``), computed once."""
        if name not in self._groups:
            bank = torch.cat(list(self.banks.values())) if name == POOLED else self.banks[name]
            self._groups[name] = copy_groups(bank)
        return self._groups[name]

    def _kept(self, name: str) -> torch.Tensor:
        """``(n,)`` bool: the members of bank ``name`` that distances are measured to (one per group of copies)."""
        groups = self._bank_groups(name)
        return groups == torch.arange(len(groups))

    def _distinct_count(self, name: str) -> int:
        return int(self._kept(name).sum())

    def _warn_copies(self, bank: torch.Tensor, label: str) -> torch.Tensor:
        """Warn when ``bank`` holds copies of one clip; returns its :func:`copy_groups`."""
        groups = copy_groups(bank)
        copies = int((groups != torch.arange(len(groups))).sum())
        if copies:
            log.warning(
                "%s: %d of %d %s-domain training clips are copies of another one (identical features); each "
                "recording counts once in the %s bank's scale and leave-one-out scores",
                self.name,
                copies,
                bank.shape[0],
                label,
                label,
            )
        return groups

    def _warn_large_k(self) -> None:
        for name in self.banks:
            count = self._distinct_count(name)
            if self.config.k > count:
                log.warning(
                    "%s: k = %d but the %s bank holds %d distinct clip(s): its distances average the whole bank",
                    self.name,
                    self.config.k,
                    name,
                    count,
                )

    def _bank_scale(self, name: str, pooled: torch.Tensor) -> float:
        """A bank's leave-one-out scale; a bank of one distinct clip takes the scale of ``pooled``
        (the section's distinct clips, all banks together)."""
        if self.config.normalize != "loo":
            return 1.0
        if self._distinct_count(name) >= 2:
            return self._loo_scale(self.banks[name], name, self._bank_groups(name))
        log.warning(
            "%s: the %s bank holds one distinct clip, so it has no spread of its own; its distances are "
            "divided by the scale of the section's %d distinct training clips",
            self.name,
            name,
            pooled.shape[0],
        )
        return self._loo_scale(pooled, "pooled", torch.arange(len(pooled)))

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return _prepare(x, self.config.metric)

    def _within(
        self, bank: torch.Tensor, k: int, groups: torch.Tensor, member_scales: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Each member's mean distance to its ``k`` nearest *other* recordings of ``bank`` (inf if it has none).

        Copies count once: distances go to the first member of each group of copies (``groups``, see
        :func:`copy_groups`) only, and never to the member's own group. ``member_scales`` divides each
        column's distances (density normalization).
        """
        keep = groups == torch.arange(bank.shape[0])
        dist = _distances(bank, bank[keep], self.config.metric)
        if member_scales is not None:
            dist = dist / member_scales[keep]
        return _knn_mean(dist.masked_fill(groups.unsqueeze(1) == groups[keep].unsqueeze(0), float("inf")), k)

    def _densities(self, bank: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """Each member's mean distance to its ``density_k`` nearest other recordings ``(n,)`` (its local density)."""
        if int((groups == torch.arange(len(groups))).sum()) < 2:
            return torch.ones(bank.shape[0])
        return self._within(bank, self.config.density_k, groups).clamp_min(1e-12)

    def scoring_bank(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What a query's distances to bank ``name`` are measured to: its distinct members ``(m, d)`` (copies
        once) and, with ``normalize = "density"``, each one's density ``(m,)`` that divides its distances."""
        keep = self._kept(name)
        scales = self.member_scales.get(name)
        return self.banks[name][keep], None if scales is None else scales[keep]

    def _to_bank(self, queries: torch.Tensor, name: str) -> torch.Tensor:
        """Distances ``(n_q, n_distinct)`` to the distinct members of bank ``name``, over their densities where used."""
        keep = self._kept(name)
        dist = _distances(queries, self.banks[name][keep], self.config.metric)
        return dist / self.member_scales[name][keep] if name in self.member_scales else dist

    def _loo_scale(self, bank: torch.Tensor, name: str, groups: torch.Tensor) -> float:
        """Median leave-one-out k-NN distance, floored at ``SCALE_FLOOR`` x the median member distance."""
        if self.config.normalize != "loo" or bank.shape[0] < 2:
            return 1.0
        distinct = groups == torch.arange(len(groups))
        scale = float(self._within(bank, self.config.k, groups)[distinct].median())
        members = bank[distinct]
        sample = members[torch.linspace(0, members.shape[0] - 1, min(members.shape[0], _SCALE_SAMPLE)).long()]
        pairs = _distances(sample, sample, self.config.metric)
        spread = float(pairs[~torch.eye(sample.shape[0], dtype=torch.bool)].median())
        floor = max(SCALE_FLOOR * spread, 1e-12)
        if scale < floor:
            log.warning(
                "%s: the %s bank's clips are near-copies of each other (leave-one-out distance %.3g, %.2g of "
                "their typical distance %.3g); its scale is floored at %.3g so that scores stay comparable",
                self.name,
                name or "memory",
                scale,
                scale / spread if spread > 0 else 0.0,
                spread,
                floor,
            )
        return max(scale, floor)

    def bank_distances(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """Normalized k-NN distance of each embedding to each bank, ``{bank: (n,)}``."""
        q = self._embed(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32))
        return {
            name: (_knn_mean(self._to_bank(q, name), self.config.k) / self.scales[name]).numpy() for name in self.banks
        }

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Anomaly scores ``(n,)``: higher is more anomalous (min over the banks)."""
        per_bank = self.bank_distances(embeddings)
        return np.min(np.stack(list(per_bank.values())), axis=0)

    def training_scores(self) -> np.ndarray:
        """Leave-one-out scores of the bank members ``(n_members,)``: each scored without itself and its copies.

        A member that copies an earlier one (in any bank) gets NaN: it is not a recording of its own, so
        it does not weigh in the threshold.
        """
        names = list(self.banks)
        groups = self._bank_groups(POOLED)
        starts = dict(zip(names, np.cumsum([0] + [len(self.banks[n]) for n in names[:-1]]).tolist(), strict=True))
        scores = []
        for name in names:
            bank, start = self.banks[name], starts[name]
            rows = groups[start : start + len(bank)]
            per_bank = []
            for other in names:
                cols = groups[starts[other] : starts[other] + len(self.banks[other])][self._kept(other)]
                dist = self._to_bank(bank, other).masked_fill(rows.unsqueeze(1) == cols.unsqueeze(0), float("inf"))
                per_bank.append(_knn_mean(dist, self.config.k) / self.scales[other])
            score = torch.stack(per_bank).min(dim=0).values
            scores.append(score.masked_fill(rows != torch.arange(start, start + len(bank)), float("nan")))
        return torch.cat(scores).numpy()

    def _fit_threshold(self, train_scores: np.ndarray) -> float:
        q = self.config.threshold_quantile
        train_scores = train_scores[np.isfinite(train_scores)]  # a clip alone in its bank has no leave-one-out score
        if train_scores.size < 3 or np.ptp(train_scores) == 0:
            return float(np.quantile(train_scores, q)) if train_scores.size else float("inf")
        try:
            shape, loc, scale = scipy.stats.gamma.fit(train_scores)
            value = float(scipy.stats.gamma.ppf(q, shape, loc=loc, scale=scale))
            if np.isfinite(value):
                return value
        except (ValueError, RuntimeError, FloatingPointError):
            pass
        log.debug("gamma fit failed; using the empirical %.2f quantile", q)
        return float(np.quantile(train_scores, q))

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """1 where a score exceeds the threshold, else 0."""
        return (np.asarray(scores) > self.threshold).astype(np.int64)


def detector_state(det: KnnDetector) -> dict:
    """Everything needed to rebuild a fitted detector (tensors and plain values)."""
    return {
        "config": dataclasses.asdict(det.config),
        "mean": det.mean,
        "std": det.std,
        "banks": dict(det.banks),
        "scales": dict(det.scales),
        "member_scales": dict(det.member_scales),
        "threshold": det.threshold,
    }


def detector_from_state(state: dict) -> KnnDetector:
    det = KnnDetector(build(DetectConfig, state["config"], "detect"))
    det.mean, det.std = state["mean"], state["std"]
    det.banks, det.scales, det.threshold = dict(state["banks"]), dict(state["scales"]), float(state["threshold"])
    det.member_scales = dict(state.get("member_scales", {}))
    return det


class FusedDetector:
    """Mean, or weighted mean, of several kNN detectors' normalized scores (e.g. learned embeddings +
    log-mel statistics).

    Each member's scores are already on a common scale (distance / the bank's leave-one-out
    median), so their mean needs no test statistics. ``weights`` (member -> weight, summing to 1;
    None = the plain mean) come from normal training clips only (:mod:`coopasd.detect.weighting`). The
    threshold comes from the members' leave-one-out training scores, combined the same way.
    """

    def __init__(
        self,
        members: dict[str, KnnDetector],
        threshold_quantile: float = 0.9,
        weights: dict[str, float] | None = None,
    ) -> None:
        if not members:
            raise ValueError("a fused detector needs at least one member")
        if weights is not None and (set(weights) != set(members) or not np.isclose(sum(weights.values()), 1.0)):
            raise ValueError(f"member weights {weights} must name the members {sorted(members)} and sum to 1")
        self.members = members
        self.threshold_quantile = threshold_quantile
        self.weights = None if weights is None else {name: float(weights[name]) for name in members}
        self.threshold = members[next(iter(members))]._fit_threshold(self.training_scores())

    def member_weight(self, name: str) -> float:
        """The weight of member ``name`` in the fused score (1 / members where no weights were decided)."""
        return 1.0 / len(self.members) if self.weights is None else self.weights[name]

    def _fuse(self, scores: list[np.ndarray]) -> np.ndarray:
        """Member scores (in ``members`` order, each ``(n,)``) -> fused ``(n,)``."""
        if self.weights is None:
            return np.mean(scores, axis=0)
        stacked = np.stack(scores)
        return np.tensordot(np.array(list(self.weights.values()), dtype=stacked.dtype), stacked, axes=1)

    def training_scores(self) -> np.ndarray:
        return self._fuse([m.training_scores() for m in self.members.values()])

    def score(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """``features``: member name -> ``(n, d)`` features of the same clips."""
        return self._fuse([m.score(features[name]) for name, m in self.members.items()])

    def decide(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores) > self.threshold).astype(np.int64)

    def state(self) -> dict:
        return {
            "members": {k: detector_state(m) for k, m in self.members.items()},
            "threshold": self.threshold,
            "threshold_quantile": self.threshold_quantile,
            "weights": None if self.weights is None else dict(self.weights),
        }

    @classmethod
    def from_state(cls, state: dict) -> FusedDetector:
        """A detector from :meth:`state` (states saved before member weights existed load as the plain mean)."""
        obj = cls.__new__(cls)
        obj.members = {k: detector_from_state(v) for k, v in state["members"].items()}
        obj.threshold_quantile = state["threshold_quantile"]
        obj.threshold = float(state["threshold"])
        weights = state.get("weights")
        obj.weights = None if weights is None else {name: float(weights[name]) for name in obj.members}
        return obj


def require_finite_scores(scores: np.ndarray, names: list[str], where: str) -> np.ndarray:
    """``scores`` when every one is a finite number, else a :class:`ScoreError` naming the clips (never written)."""
    scores = np.asarray(scores, dtype=np.float64)
    bad = [f"{n} ({s})" for n, s in zip(names, scores.tolist(), strict=True) if not np.isfinite(s)]
    if bad:
        raise ScoreError(
            f"{where}: {len(bad)} clip(s) got a score that is not a finite number, e.g. {', '.join(bad[:3])}: "
            "the model file or the audio is broken; nothing was written for them"
        )
    return scores


def section_key(machine_type: str, section: str) -> str:
    return f"{machine_type}/{section}"


def member_settings(name: str, cfg: DetectConfig) -> DetectConfig:
    """The ``learned`` member follows ``[detect]``; ``logmel`` is always z-scored Euclidean; ``aisfx``
    (a frozen pre-trained embedding) cosine without z-scoring, as it was measured best; ``ae`` Euclidean."""
    if name == "learned":
        return cfg
    if name == "aisfx":
        return dataclasses.replace(cfg, metric="cosine", standardize=False)
    if name == "ae":  # one value per clip (its log reconstruction error): the distance is the difference
        return dataclasses.replace(cfg, metric="euclidean", standardize=False)
    return dataclasses.replace(cfg, metric="euclidean", standardize=True)


def require_distinct(det: KnnDetector, n_clips: int) -> KnnDetector:
    """``det`` if it was fitted on at least 2 distinct clips, else a :class:`DetectorError` naming it
    (with one distinct clip no threshold can be fitted, whatever the normalization)."""
    if det.n_distinct < 2:
        raise DetectorError(
            f"{det.name}: {n_clips} normal training clip(s) but {det.n_distinct} distinct: a detector needs at "
            "least 2 distinct clips (copies of one recording count once)"
        )
    return det


def fit_detector(
    features: dict[str, np.ndarray],
    is_target: np.ndarray,
    cfg: DetectConfig,
    name: str = "section",
    weights: dict[str, float] | None = None,
) -> FusedDetector:
    """Fit one member per feature set on a section's normal training clips (source and target banks).

    ``weights``: each member's share of the fused score (None: the plain mean; see
    :func:`coopasd.detect.weighting.validated_weights`).
    ``name`` (``machine/section``) is what warnings and errors name. Raises :class:`DetectorError`
    when the section has no source-domain clips or fewer than two distinct clips.
    """
    is_target = np.asarray(is_target, dtype=bool)
    if not (~is_target).any():
        raise DetectorError(
            f"{name}: {int(is_target.sum())} target-domain but no source-domain normal training clips; a detector "
            "needs source-domain clips (DCASE: section_XX_source_train_normal_*)"
        )
    members = {}
    for member, feats in features.items():
        det = KnnDetector(member_settings(member, cfg)).fit(feats[~is_target], feats[is_target], f"{name} {member}")
        members[member] = require_distinct(det, len(feats))
    return FusedDetector(members, cfg.threshold_quantile, weights)


@dataclass
class FactoryModel:
    """What one factory keeps and uses to score its clips.

    One file, loadable alone (:meth:`load`); it is also a valid encoder checkpoint for
    :func:`coopasd.model.checkpoint.load_beats` (``cfg`` + ``model`` at the top level).
    """

    name: str
    encoder: Encoder  # BEATs, or the tuned aiSFX CNN (its trainable blocks only in the file)
    model_cfg: ModelConfig
    detect_cfg: DetectConfig
    data_cfg: DataConfig
    detectors: dict[str, FusedDetector]  # "machine/section" -> detector
    classes: list[str] = field(default_factory=list)  # the head's attribute classes
    head_state: dict | None = None  # the local margin head (never shared)
    meta: dict = field(default_factory=dict)
    frozen: dict[str, nn.Module] = field(default_factory=dict)  # frozen encoders of detector members (aisfx)
    clip_samples: int = 0  # length of the clips its banks hold, at data_cfg.sample_rate (0: unknown, older files)

    def __post_init__(self) -> None:
        if not self.clip_samples and self.data_cfg.seconds:  # a fixed [data] seconds: every clip had that length
            self.clip_samples = int(round(self.data_cfg.seconds * self.data_cfg.sample_rate))

    @property
    def clip_seconds(self) -> float:
        """The length every clip is brought to before scoring (its run's clips), in seconds; 0 if unknown."""
        return self.clip_samples / self.data_cfg.sample_rate

    def clip_length(self) -> int:
        """:attr:`clip_samples`; :class:`CheckpointError` for a file that does not record it."""
        if not self.clip_samples:
            raise CheckpointError(
                f"factory model '{self.name}' does not record the clip length it was built on (a file written "
                "before coopasd saved it, with [data] seconds = 0): re-run its training to score or export with it"
            )
        return self.clip_samples

    def features(self, waves: np.ndarray, device: str = "auto") -> dict[str, np.ndarray]:
        return clip_features(self.encoder, waves, self.model_cfg, self.detect_cfg, device, self.frozen)

    def score(self, waves: np.ndarray, machine_type: str, section: str) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly scores and 0/1 decisions of ``(n, samples)`` waves of one machine type and section."""
        key = section_key(machine_type, section)
        if key not in self.detectors:
            raise KeyError(f"factory model '{self.name}' has no detector for {key}; it has {sorted(self.detectors)}")
        det = self.detectors[key]
        scores = det.score(self.features(waves))
        return scores, det.decide(scores)

    def to_bytes(self) -> bytes:
        """The serialized model file (written by :func:`coopasd.rundir.writer.save_model`)."""
        payload_meta = dict(self.meta) | {
            "factory": self.name,
            "model_cfg": dataclasses.asdict(self.model_cfg),
            "detect_cfg": dataclasses.asdict(self.detect_cfg),
            "data_cfg": dataclasses.asdict(self.data_cfg),
            "classes": list(self.classes),
            "detectors": {k: d.state() for k, d in self.detectors.items()},
            "head": self.head_state,
            "frozen": {
                name: expected_weights_sha256(AISFX_WEIGHTS) for name in self.frozen
            },  # shipped weights, checked on load
            "clip_samples": int(self.clip_samples),
        }
        if isinstance(self.encoder, AisfxEncoder):  # the frozen part: the shipped weights of this sha256
            payload_meta["aisfx_weights_sha256"] = self.encoder.weights_sha256
        return checkpoint_bytes(self.encoder.cfg.to_dict(), self.encoder.state_dict(), payload_meta)

    @classmethod
    def load(cls, path: Path) -> FactoryModel:
        """A factory model file written by :meth:`to_bytes`; its checksum is verified before it is read.

        Raises :class:`CheckpointError` (one line naming the file) when it is missing, truncated,
        altered, not a factory model, or holds anything but tensors and plain data.
        """
        path = Path(path)
        payload = read_checkpoint(path, require_seal=True)
        meta = dict(payload.get("meta") or {})
        if "detectors" not in meta or "factory" not in meta:
            raise CheckpointError(f"{path}: an encoder checkpoint, not a factory model (no detectors inside)")
        try:
            model_cfg = build(ModelConfig, meta.pop("model_cfg"), "model")
            detect_cfg = build(DetectConfig, meta.pop("detect_cfg"), "detect")
            encoder = encoder_for_file(model_cfg, payload["cfg"], meta, autoencoder=wants_autoencoder(detect_cfg))
            meta.pop("aisfx_weights_sha256", None)
            load_state_strict(encoder, payload["model"], path)
            model = cls(
                name=str(meta.pop("factory")),
                encoder=encoder.eval(),
                model_cfg=model_cfg,
                detect_cfg=detect_cfg,
                data_cfg=build(DataConfig, meta.pop("data_cfg"), "data"),
                detectors={k: FusedDetector.from_state(v) for k, v in meta.pop("detectors").items()},
                classes=list(meta.pop("classes")),
                head_state=meta.pop("head"),
                frozen={
                    n: load_aisfx(AISFX_WEIGHTS, expected_sha256=h).for_inference()
                    for n, h in meta.pop("frozen", {}).items()
                },
                clip_samples=int(meta.pop("clip_samples", 0)),
                meta=meta,
            )
        except CheckpointError:
            raise
        except (CoopasdError, KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise CheckpointError(f"{path}: not a usable factory model ({type(err).__name__}: {err})") from err
        _check_file_name(path, model)
        for key, det in model.detectors.items():
            scales = [v for m in det.members.values() for v in m.scales.values()]
            weights = [det.member_weight(name) for name in det.members]
            if np.isnan(det.threshold) or not all(np.isfinite(v) and v > 0 for v in scales):
                raise CheckpointError(f"{path}: detector {key} holds a threshold or scale that is not a valid number")
            if not all(np.isfinite(w) and w >= 0 for w in weights) or not np.isclose(sum(weights), 1.0):
                raise CheckpointError(f"{path}: detector {key} holds member weights that are not shares summing to 1")
        return model


RUN_MODELS_DIR = "models"  # RUN_DIR/models/<factory>.pt: the file name is the factory's name


def _check_file_name(path: Path, model: FactoryModel) -> None:
    """A run's ``models/<factory>.pt`` must hold that factory (not a file copied over it); elsewhere a file
    named after another factory than the one inside is loaded with a warning."""
    inside = f"factory '{model.name}' ({', '.join(sorted(model.detectors))})"
    if path.stem == model.name or path.name == "model.pt":  # a federated factory's own folder: <factory>/model.pt
        return
    if path.parent.name == RUN_MODELS_DIR:
        raise CheckpointError(
            f"{path}: holds {inside}, but a run directory's {RUN_MODELS_DIR}/{path.name} is factory '{path.stem}'s "
            "model; was another model copied over it?"
        )
    log.warning("%s: the file holds %s, not '%s' as its name suggests", path, inside, path.stem)
