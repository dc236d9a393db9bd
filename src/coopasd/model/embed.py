"""Clip embeddings: where the encoder runs, pooled encoder outputs, and the feature sets a detector needs."""

from __future__ import annotations

import functools
import hashlib
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import numpy as np
import torch
from torch import nn

from coopasd.config.settings import DetectConfig, ModelConfig, detector_members
from coopasd.data.features import logmel_statistics
from coopasd.errors import ConfigError
from coopasd.model.aisfx import DEFAULT_WEIGHTS as AISFX_WEIGHTS
from coopasd.model.aisfx import AisfxCNN, load_aisfx
from coopasd.model.aisfx_encoder import AisfxEncoder
from coopasd.model.beats import Pooling, pool
from coopasd.model.encoders import Encoder
from coopasd.model.frame_autoencoder import carried_autoencoder

LOGMEL_BATCH = 64  # clips per batch when computing log-mel statistics
FROZEN_MEMO_CLIPS = 200_000  # clip embeddings a frozen encoder remembers per process (512 floats each)

# A frozen encoder's embedding of a clip never changes, so each process computes it once per clip (by its
# content) and device: the rounds, the per-round evaluation and the modes of a comparison reuse it. The one
# process-level cache of the package; it dies with its encoder.
_FROZEN_MEMO: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, bytes], np.ndarray]] = weakref.WeakKeyDictionary()

Precision = Literal["auto", "fp32", "tf32", "bf16"]


def pick_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present; asking for ``cuda`` without one is a :class:`ConfigError`."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "[train] device = 'cuda': no CUDA device is available here (torch sees none); use 'auto' or 'cpu'"
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(precision: Precision, device: torch.device) -> Literal["fp32", "tf32", "bf16"]:
    """What ``[model] precision`` means on ``device``: ``auto`` is bf16 on a CUDA device that supports it
    (features within about 1e-2 relative of fp32, see docs/speed.md), else fp32; ``tf32`` only changes CUDA."""
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


def embedding_dim(encoder: Encoder, pooling: Pooling) -> int:
    """Length of a pooled clip embedding (aiSFX: always its own pooling, 512)."""
    if isinstance(encoder, AisfxEncoder):
        return encoder.embedding_dim
    d = encoder.cfg.encoder_embed_dim
    return d * encoder.freq_patches if pooling == "mean_freq" else d


def clip_embeddings(
    encoder: Encoder,
    waves: torch.Tensor,
    pooling: Pooling = "mean",
    layer: int = -1,
    fbank_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Pooled embeddings ``(batch, dim)`` of waveforms ``(batch, samples)`` (graph kept for training).

    The aiSFX encoder has its own pooling and no layer choice (``pooling``, ``layer`` and the fbank
    transform do not apply: it trains on cached maps, see :func:`coopasd.learn.train.train_local`)."""
    if isinstance(encoder, AisfxEncoder):
        return encoder(waves)
    features, mask = encoder.layer_features(waves, layer, fbank_transform)
    return pool(features, encoder.freq_patches, pooling, mask)


@torch.no_grad()
def embed(
    encoder: Encoder,
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


@functools.lru_cache(maxsize=1)
def _shipped_aisfx() -> AisfxCNN:
    return load_aisfx(AISFX_WEIGHTS).for_inference()


def frozen_encoders(detect_cfg: DetectConfig) -> dict[str, nn.Module]:
    """The frozen pre-trained encoders the detector's members need (``aisfx``: the shipped weights, verified
    once per process; one shared instance, so its embeddings are computed once per clip)."""
    return {"aisfx": _shipped_aisfx()} if "aisfx" in detector_members(detect_cfg.features) else {}


@torch.no_grad()
def frozen_embed(encoder: AisfxCNN, waves: np.ndarray, batch_size: int = 16, device: str = "auto") -> np.ndarray:
    """The frozen aiSFX embedding ``(n, 512)`` (last block, mean over frequency, max over time); clips this
    encoder already embedded on this device in this process are taken from its memo."""
    dev = pick_device(device)
    memo = _FROZEN_MEMO.setdefault(encoder, {})
    keys = [(str(dev), hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16).digest()) for w in waves]
    first: dict[tuple[str, bytes], int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)  # copies of a clip are embedded once
    todo = [i for key, i in first.items() if key not in memo]
    if todo:
        encoder = encoder.to(dev).eval()
        fresh = torch.as_tensor(waves[todo])
        batches = [encoder(fresh[i : i + batch_size].to(dev)).cpu() for i in range(0, len(todo), batch_size)]
        out = torch.cat(batches).numpy()
        if len(memo) + len(todo) > FROZEN_MEMO_CLIPS:
            memo.clear()
        memo.update({keys[i]: row for i, row in zip(todo, out, strict=True)})
    if not keys:
        return np.zeros((0, encoder.embedding_dim), np.float32)
    return np.stack([memo[key] for key in keys])


def clip_features(
    encoder: Encoder | None,
    waves: np.ndarray,
    model_cfg: ModelConfig,
    detect_cfg: DetectConfig,
    device: str = "auto",
    frozen: dict[str, nn.Module] | None = None,
) -> dict[str, np.ndarray]:
    """The feature sets the detector members of ``detect_cfg.features`` need, for ``(n, samples)`` waves,
    each ``(n, d)``: ``learned`` (pooled encoder layer), ``logmel`` (log-mel statistics), ``aisfx``
    (the frozen encoder ``frozen["aisfx"]``, see :func:`frozen_encoders`), ``ae`` (the log reconstruction
    error of the frame autoencoder the encoder carries, ``(n, 1)``)."""
    out: dict[str, np.ndarray] = {}
    for member in detector_members(detect_cfg.features):
        if member == "learned":
            if encoder is None:
                raise ValueError("learned features need an encoder")
            out["learned"] = embed(
                encoder, waves, model_cfg.pooling, model_cfg.layer, device=device, precision=model_cfg.precision
            )
        elif member == "logmel":
            out["logmel"] = logmel_features(waves)
        elif member == "ae":
            ae = carried_autoencoder(encoder)
            if ae is None:
                raise ValueError("the ae member needs an encoder that carries its frame autoencoder")
            out["ae"] = ae.clip_features(waves)
        else:
            if not frozen or member not in frozen:
                raise ValueError(f"the {member} member needs its frozen encoder (see frozen_encoders)")
            out[member] = frozen_embed(frozen[member], waves, device=device)  # type: ignore[arg-type]
    return out
