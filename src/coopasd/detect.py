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

from coopasd.config import DataConfig, DetectConfig, ModelConfig, build
from coopasd.embed import AISFX_WEIGHTS, clip_features
from coopasd.model.aisfx import expected_weights_sha256, load_aisfx
from coopasd.model.beats import BEATs, BEATsConfig
from coopasd.model.checkpoint import CheckpointError, checkpoint_bytes, load_state_strict, read_checkpoint

log = logging.getLogger(__name__)

Metric = Literal["cosine", "euclidean"]


def _prepare(x: torch.Tensor, metric: Metric) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=1) if metric == "cosine" else x


def _distances(queries: torch.Tensor, bank: torch.Tensor, metric: Metric) -> torch.Tensor:
    if metric == "cosine":
        return 1.0 - queries @ bank.T
    return torch.cdist(queries, bank)


def _knn_mean(dist: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, dist.shape[1])
    return dist.topk(k, dim=1, largest=False).values.mean(dim=1)


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

    def fit(self, source: np.ndarray, target: np.ndarray | None = None) -> KnnDetector:
        """``source``: ``(n_s, d)`` normal source embeddings; ``target``: ``(n_t, d)`` or None/empty."""
        src = torch.as_tensor(np.asarray(source), dtype=torch.float32)
        if src.ndim != 2 or src.shape[0] == 0:
            raise ValueError(f"source bank needs at least one embedding, got shape {tuple(src.shape)}")
        tgt = torch.as_tensor(np.asarray(target), dtype=torch.float32) if target is not None else None
        if tgt is not None and (tgt.ndim != 2 or tgt.shape[0] == 0):
            tgt = None
        pooled = src if tgt is None else torch.cat([src, tgt])
        if self.config.standardize:
            self.mean = pooled.mean(dim=0)
            self.std = pooled.std(dim=0, unbiased=False).clamp_min(1e-6)
        cfg = self.config
        source_bank = self._embed(src)
        self.banks = {"source": source_bank}
        if cfg.source_bank == "kmeans":
            self.banks["source"] = kmeans_bank(source_bank, cfg.kmeans_clusters, cfg.metric)
        if tgt is not None:
            self.banks["target"] = mix_target_bank(self._embed(tgt), source_bank, cfg.target_mix, cfg.metric)
        if cfg.normalize == "density":
            self.member_scales = {name: self._densities(bank) for name, bank in self.banks.items()}
        self.scales = {name: self._loo_scale(bank) for name, bank in self.banks.items()}
        self.threshold = self._fit_threshold(self.training_scores())
        return self

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return _prepare(x, self.config.metric)

    def _densities(self, bank: torch.Tensor) -> torch.Tensor:
        """Each member's mean distance to its ``density_k`` nearest other members ``(n,)`` (its local density)."""
        if bank.shape[0] < 2:
            return torch.ones(bank.shape[0])
        dist = _distances(bank, bank, self.config.metric)
        dist.fill_diagonal_(float("inf"))
        return _knn_mean(dist, min(self.config.density_k, bank.shape[0] - 1)).clamp_min(1e-12)

    def _to_bank(self, queries: torch.Tensor, name: str) -> torch.Tensor:
        """Distances ``(n_q, n_bank)`` to the members of bank ``name``, over their densities where used."""
        dist = _distances(queries, self.banks[name], self.config.metric)
        return dist / self.member_scales[name] if name in self.member_scales else dist

    def _loo_distances(self, bank: torch.Tensor, name: str = "") -> torch.Tensor:
        """Each member's k-NN distance to the other members of its own bank."""
        if bank.shape[0] < 2:
            return torch.zeros(bank.shape[0])
        dist = self._to_bank(bank, name) if name in self.member_scales else _distances(bank, bank, self.config.metric)
        dist.fill_diagonal_(float("inf"))
        return _knn_mean(dist, min(self.config.k, bank.shape[0] - 1))

    def _loo_scale(self, bank: torch.Tensor) -> float:
        if self.config.normalize != "loo" or bank.shape[0] < 2:
            return 1.0
        return max(float(self._loo_distances(bank).median()), 1e-12)

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
        """Leave-one-out scores of the training clips (each scored without itself)."""
        scores = []
        for name, bank in self.banks.items():
            own = self._loo_distances(bank, name) / self.scales[name]
            others = [
                _knn_mean(self._to_bank(bank, o), self.config.k) / self.scales[o] for o in self.banks if o != name
            ]
            scores.append(torch.stack([own, *others]).min(dim=0).values)
        return torch.cat(scores).numpy()

    def _fit_threshold(self, train_scores: np.ndarray) -> float:
        q = self.config.threshold_quantile
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
    """Mean of several kNN detectors' normalized scores (e.g. learned embeddings + log-mel statistics).

    Each member's scores are already on a common scale (distance / the bank's leave-one-out
    median), so their mean needs no test statistics. The threshold comes from the members'
    leave-one-out training scores, combined the same way.
    """

    def __init__(self, members: dict[str, KnnDetector], threshold_quantile: float = 0.9) -> None:
        if not members:
            raise ValueError("a fused detector needs at least one member")
        self.members = members
        self.threshold_quantile = threshold_quantile
        self.threshold = members[next(iter(members))]._fit_threshold(self.training_scores())

    def training_scores(self) -> np.ndarray:
        return np.mean([m.training_scores() for m in self.members.values()], axis=0)

    def score(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """``features``: member name -> ``(n, d)`` features of the same clips."""
        return np.mean([m.score(features[name]) for name, m in self.members.items()], axis=0)

    def decide(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores) > self.threshold).astype(np.int64)

    def state(self) -> dict:
        return {
            "members": {k: detector_state(m) for k, m in self.members.items()},
            "threshold": self.threshold,
            "threshold_quantile": self.threshold_quantile,
        }

    @classmethod
    def from_state(cls, state: dict) -> FusedDetector:
        obj = cls.__new__(cls)
        obj.members = {k: detector_from_state(v) for k, v in state["members"].items()}
        obj.threshold_quantile = state["threshold_quantile"]
        obj.threshold = float(state["threshold"])
        return obj


def section_key(machine_type: str, section: str) -> str:
    return f"{machine_type}/{section}"


def member_settings(name: str, cfg: DetectConfig) -> DetectConfig:
    """The ``learned`` member follows ``[detect]``; ``logmel`` is always z-scored Euclidean; ``aisfx``
    (a frozen pre-trained embedding) cosine without z-scoring, as it was measured best."""
    if name == "learned":
        return cfg
    if name == "aisfx":
        return dataclasses.replace(cfg, metric="cosine", standardize=False)
    return dataclasses.replace(cfg, metric="euclidean", standardize=True)


def fit_detector(features: dict[str, np.ndarray], is_target: np.ndarray, cfg: DetectConfig) -> FusedDetector:
    """Fit one member per feature set on a section's normal training clips (source and target banks)."""
    members = {
        name: KnnDetector(member_settings(name, cfg)).fit(feats[~is_target], feats[is_target])
        for name, feats in features.items()
    }
    return FusedDetector(members, cfg.threshold_quantile)


@dataclass
class FactoryModel:
    """What one factory keeps and uses to score its clips.

    One file, loadable alone (:meth:`load`); it is also a valid encoder checkpoint for
    :func:`coopasd.model.checkpoint.load_beats` (``cfg`` + ``model`` at the top level).
    """

    name: str
    encoder: BEATs
    model_cfg: ModelConfig
    detect_cfg: DetectConfig
    data_cfg: DataConfig
    detectors: dict[str, FusedDetector]  # "machine/section" -> detector
    classes: list[str] = field(default_factory=list)  # the head's attribute classes
    head_state: dict | None = None  # the local margin head (never shared)
    meta: dict = field(default_factory=dict)
    frozen: dict[str, nn.Module] = field(default_factory=dict)  # frozen encoders of detector members (aisfx)

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
        """The serialized model file (written by :func:`coopasd.report.save_model`)."""
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
        }
        return checkpoint_bytes(self.encoder.cfg.to_dict(), self.encoder.state_dict(), payload_meta)

    @classmethod
    def load(cls, path: Path) -> FactoryModel:
        payload = read_checkpoint(Path(path))
        meta = dict(payload.get("meta") or {})
        if "detectors" not in meta or "factory" not in meta:
            raise CheckpointError(f"{path}: an encoder checkpoint, not a factory model (no detectors inside)")
        encoder = BEATs(BEATsConfig.from_dict(payload["cfg"]))
        model_cfg = build(ModelConfig, meta.pop("model_cfg"), "model")
        if model_cfg.lora_rank:
            encoder.add_lora(model_cfg.lora_rank)
        load_state_strict(encoder, payload["model"], Path(path))
        return cls(
            name=meta.pop("factory"),
            encoder=encoder.eval(),
            model_cfg=model_cfg,
            detect_cfg=build(DetectConfig, meta.pop("detect_cfg"), "detect"),
            data_cfg=build(DataConfig, meta.pop("data_cfg"), "data"),
            detectors={k: FusedDetector.from_state(v) for k, v in meta.pop("detectors").items()},
            classes=list(meta.pop("classes")),
            head_state=meta.pop("head"),
            frozen={n: load_aisfx(AISFX_WEIGHTS, expected_sha256=h) for n, h in meta.pop("frozen", {}).items()},
            meta=meta,
        )
