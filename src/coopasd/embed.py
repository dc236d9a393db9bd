"""Clip embeddings: where the encoder runs, pooled encoder outputs, and the feature sets a detector needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import numpy as np
import torch

from coopasd.config import DetectConfig, ModelConfig
from coopasd.features import logmel_statistics
from coopasd.model.beats import BEATs, Pooling, pool

LOGMEL_BATCH = 64  # clips per batch when computing log-mel statistics

Precision = Literal["auto", "fp32", "tf32", "bf16"]


def pick_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present; asking for ``cuda`` without one is an error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device = 'cuda' asked for, but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(precision: Precision, device: torch.device) -> Literal["fp32", "tf32", "bf16"]:
    """What ``[model] precision`` means on ``device``: ``auto`` is bf16 on a CUDA device that supports it
    (features within about 1e-2 relative of fp32, see README), else fp32; ``tf32`` only changes CUDA."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "tf32" and device.type != "cuda":
        return "fp32"
    return precision


@contextmanager
def precision_scope(precision: Precision, device: torch.device) -> Iterator[Literal["fp32", "tf32", "bf16"]]:
    """Around a whole embedding or training loop: TF32 matmuls and convolutions on CUDA for ``tf32``
    (PyTorch's global flags, restored on exit); yields the resolved precision for :func:`autocast`."""
    mode = resolve_precision(precision, device)
    if mode != "tf32":
        yield mode
        return
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision = conv.fp32_precision = "tf32"
    try:
        yield mode
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def autocast(mode: Literal["fp32", "tf32", "bf16"], device: torch.device):
    """Around a forward pass: bfloat16 autocast for ``bf16`` (CUDA, and CPU where asked), else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16" else nullcontext()


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
    features, mask = encoder.layer_features(waves, layer, fbank_transform)
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
    precision: Precision = "fp32",
) -> np.ndarray:
    """Embeddings ``(n, dim)`` float32 of ``(n, samples)`` waveforms, in eval mode, at ``precision``."""
    dev = pick_device(device)
    encoder = encoder.to(dev).eval()
    out = []
    with precision_scope(precision, dev) as mode:
        for i in range(0, len(waves), batch_size):
            batch = torch.as_tensor(waves[i : i + batch_size], device=dev)
            with autocast(mode, dev):
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
        out["learned"] = embed(
            encoder, waves, model_cfg.pooling, model_cfg.layer, device=device, precision=model_cfg.precision
        )
    if detect_cfg.features in ("fusion", "logmel"):
        out["logmel"] = logmel_features(waves)
    return out
