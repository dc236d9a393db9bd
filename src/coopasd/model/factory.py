"""A factory's saved detector: encoder, embedding recipe, local head and per-section detectors.

One file, loadable alone (``FactoryModel.load``); it is also a valid encoder checkpoint for
:func:`coopasd.model.beats.load_beats` (``cfg`` + ``model`` at the top level).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coopasd.config import DataConfig, DetectConfig, ModelConfig, build
from coopasd.detect import FusedDetector, KnnConfig, KnnDetector
from coopasd.features import logmel_statistics
from coopasd.model.beats import BEATs, BEATsConfig
from coopasd.model.checkpoint import CheckpointError, load_state_strict, read_checkpoint, save_checkpoint
from coopasd.train import embed


def section_key(machine_type: str, section: str) -> str:
    return f"{machine_type}/{section}"


def clip_features(
    encoder: BEATs | None, waves: np.ndarray, model_cfg: ModelConfig, detect_cfg: DetectConfig, device: str = "auto"
) -> dict[str, np.ndarray]:
    """The feature sets the detector of ``detect_cfg.features`` needs, for ``(n, samples)`` waves."""
    out: dict[str, np.ndarray] = {}
    if detect_cfg.features in ("fusion", "learned"):
        if encoder is None:
            raise ValueError("learned features need an encoder")
        out["learned"] = embed(encoder, waves, model_cfg.pooling, model_cfg.layer, device=device)
    if detect_cfg.features in ("fusion", "logmel"):
        out["logmel"] = np.concatenate([logmel_statistics(waves[i : i + 64]) for i in range(0, len(waves), 64)])
    return out


def fit_detector(features: dict[str, np.ndarray], is_target: np.ndarray, cfg: DetectConfig) -> FusedDetector:
    """Fit one member per feature set on a section's normal training clips (source and target banks)."""
    members: dict[str, KnnDetector] = {}
    for name, feats in features.items():
        knn = (
            KnnConfig(
                k=cfg.k, metric=cfg.metric, standardize=cfg.standardize, threshold_quantile=cfg.threshold_quantile
            )
            if name == "learned"
            else KnnConfig(k=cfg.k, metric="euclidean", standardize=True, threshold_quantile=cfg.threshold_quantile)
        )
        members[name] = KnnDetector(knn).fit(feats[~is_target], feats[is_target])
    return FusedDetector(members, cfg.threshold_quantile)


@dataclass
class FactoryModel:
    """What one factory keeps and uses to score its clips."""

    name: str
    encoder: BEATs
    model_cfg: ModelConfig
    detect_cfg: DetectConfig
    data_cfg: DataConfig
    detectors: dict[str, FusedDetector]  # "machine/section" -> detector
    classes: list[str] = field(default_factory=list)  # the head's attribute classes
    head_state: dict | None = None  # the local margin head (never shared)
    meta: dict = field(default_factory=dict)

    def features(self, waves: np.ndarray, device: str = "auto") -> dict[str, np.ndarray]:
        return clip_features(self.encoder, waves, self.model_cfg, self.detect_cfg, device)

    def score(self, waves: np.ndarray, machine_type: str, section: str) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly scores and 0/1 decisions of ``(n, samples)`` waves of one machine type and section."""
        key = section_key(machine_type, section)
        if key not in self.detectors:
            raise KeyError(f"factory model '{self.name}' has no detector for {key}; it has {sorted(self.detectors)}")
        det = self.detectors[key]
        scores = det.score(self.features(waves))
        return scores, det.decide(scores)

    def save(self, path: Path) -> Path:
        payload_meta = dict(self.meta) | {
            "factory": self.name,
            "model_cfg": dataclasses.asdict(self.model_cfg),
            "detect_cfg": dataclasses.asdict(self.detect_cfg),
            "data_cfg": dataclasses.asdict(self.data_cfg),
            "classes": list(self.classes),
            "detectors": {k: d.state() for k, d in self.detectors.items()},
            "head": self.head_state,
        }
        return save_checkpoint(path, self.encoder.cfg.to_dict(), self.encoder.state_dict(), payload_meta)

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
            meta=meta,
        )
