"""Clip embeddings: where the encoder runs, pooled encoder outputs, and the feature sets a detector needs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from coopasd.config import DetectConfig, ModelConfig
from coopasd.features import logmel_statistics
from coopasd.model.beats import BEATs, Pooling, pool

LOGMEL_BATCH = 64  # clips per batch when computing log-mel statistics


def pick_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present; asking for ``cuda`` without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device = 'cuda' asked for, but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def embedding_dim(encoder: BEATs, pooling: Pooling) -> int:
    """Length of a pooled clip embedding."""
    d = encoder.cfg.encoder_embed_dim
    return d * encoder.freq_patches if pooling == "mean_freq" else d


def clip_embeddings(
    encoder: BEATs,
    waves: torch.Tensor,
    pooling: Pooling = "mean",
    layer: int = -1,
    fbank_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Pooled embeddings ``(batch, dim)`` of waveforms ``(batch, samples)`` (graph kept for training)."""
    if layer == -1:
        features, mask = encoder.extract_features(waves, fbank_transform=fbank_transform)
    else:
        _, mask, layers = encoder.extract_features(waves, return_layers=True, fbank_transform=fbank_transform)
        features = layers[layer]
    return pool(features, encoder.freq_patches, pooling, mask)


@torch.no_grad()
def embed(
    encoder: BEATs,
    waves: np.ndarray,
    pooling: Pooling = "mean",
    layer: int = -1,
    batch_size: int = 32,
    device: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Embeddings ``(n, dim)`` of ``(n, samples)`` waveforms, in eval mode."""
    dev = pick_device(device)
    encoder = encoder.to(dev).eval()
    out = []
    for i in range(0, len(waves), batch_size):
        batch = torch.as_tensor(waves[i : i + batch_size], device=dev)
        out.append(clip_embeddings(encoder, batch, pooling, layer).float().cpu())
        if progress:
            progress(len(batch))
    if not out:
        return np.zeros((0, embedding_dim(encoder, pooling)), np.float32)
    return torch.cat(out).numpy()


def logmel_features(waves: np.ndarray) -> np.ndarray:
    """Per-band log-mel mean and std ``(n, 256)`` of ``(n, samples)`` waveforms, in batches."""
    if len(waves) == 0:
        return np.zeros((0, 256), np.float32)
    return np.concatenate([logmel_statistics(waves[i : i + LOGMEL_BATCH]) for i in range(0, len(waves), LOGMEL_BATCH)])


def clip_features(
    encoder: BEATs | None, waves: np.ndarray, model_cfg: ModelConfig, detect_cfg: DetectConfig, device: str = "auto"
) -> dict[str, np.ndarray]:
    """The feature sets the detector of ``detect_cfg.features`` needs, for ``(n, samples)`` waves:
    ``learned`` (pooled encoder layer) and/or ``logmel`` (log-mel statistics), each ``(n, d)``."""
    out: dict[str, np.ndarray] = {}
    if detect_cfg.features in ("fusion", "learned"):
        if encoder is None:
            raise ValueError("learned features need an encoder")
        out["learned"] = embed(encoder, waves, model_cfg.pooling, model_cfg.layer, device=device)
    if detect_cfg.features in ("fusion", "logmel"):
        out["logmel"] = logmel_features(waves)
    return out
