"""The frame autoencoder (``[detect] features`` member ``ae``): the DCASE baseline's autoencoder over a few
consecutive log-mel frames, whose reconstruction error is a clip's feature.

It learns what normal frames of the plant's machines look like, so unlike the frozen members it
improves with every normal clip it is trained on: trained on one unit's 20 clips it is weak, trained
on every unit's clips (centralized, or federated: its weights travel with the encoder's) it is
not (``benchmarks/frame_autoencoder.py``). Layer norm in place of the baseline's batch norm: no
running statistics, so nothing in it depends on which factory's batches it saw last.

A clip's feature is the log of its mean squared reconstruction error over its frame windows,
``(n, 1)``; the kNN detector then compares it with the errors of the section's normal clips (source
and target banks, leave-one-out normalized) like any member.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from coopasd.data.features import beats_fbank

CONTEXT = 5  # consecutive log-mel frames per input
BINS = 128  # log-mel bins (the project's Kaldi fbank)
HIDDEN = 128
BOTTLENECK = 8
ERROR_BATCH = 32  # clips per forward pass when computing errors


def _block(a: int, b: int) -> list[nn.Module]:
    return [nn.Linear(a, b), nn.LayerNorm(b), nn.ReLU()]


class FrameAutoencoder(nn.Module):
    """``CONTEXT x BINS`` log-mel values -> bottleneck of ``BOTTLENECK`` -> the same values."""

    def __init__(self) -> None:
        super().__init__()
        dim = CONTEXT * BINS
        sizes = [dim, HIDDEN, HIDDEN, HIDDEN, BOTTLENECK, HIDDEN, HIDDEN, HIDDEN]
        layers = [m for a, b in zip(sizes, sizes[1:], strict=False) for m in _block(a, b)]
        self.net = nn.Sequential(*layers, nn.Linear(HIDDEN, dim))
        self.register_buffer("mean", torch.zeros(dim))  # input z-scoring, fitted on the first training clips
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("fitted", torch.zeros(()))  # 1 once the scaling is fitted (it stays at the factory)

    def fit_scaling(self, windows: torch.Tensor) -> None:
        """Set the input z-scoring from ``(..., dim)`` normal windows, unless it is fitted already."""
        if float(self.fitted) > 0:
            return
        flat = windows.reshape(-1, windows.shape[-1])
        with torch.no_grad():
            self.mean.copy_(flat.mean(0))
            self.std.copy_(flat.std(0).clamp_min(1e-3))
            self.fitted.fill_(1.0)

    @staticmethod
    def frames(waves: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` waves -> ``(batch, frames, BINS)`` BEATs-normalized log-mel frames, computed in
        float64 (as ``logmel_moments``: float32 FFT round-off in the lowest bins differs between runtimes)."""
        return beats_fbank(waves.to(torch.float64)).to(torch.float32)

    @classmethod
    def windows(cls, waves: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` waves -> ``(batch, windows, CONTEXT * BINS)`` stacked normalized log-mel frames."""
        fbank = cls.frames(waves)
        count = fbank.shape[1] - CONTEXT + 1
        if count < 1:
            raise ValueError(f"a clip of {waves.shape[1]} samples has fewer than {CONTEXT} log-mel frames")
        return torch.cat([fbank[:, i : i + count] for i in range(CONTEXT)], dim=2)  # frame by frame, as exported

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def window_errors(self, windows: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error of each z-scored window, ``(..., dim)`` -> ``(...)``."""
        z = (windows - self.mean) / self.std
        return (self(z) - z).pow(2).mean(dim=-1)

    def log_errors(self, waves: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` waves -> ``(batch, 1)``: log of each clip's mean window error (the member's
        feature; also the exported graph's)."""
        return self.window_errors(self.windows(waves)).mean(dim=1).clamp_min(1e-12).log().unsqueeze(1)

    @torch.no_grad()
    def clip_features(self, waves: np.ndarray) -> np.ndarray:
        """:meth:`log_errors` of ``(n, samples)`` numpy waves, ``(n, 1)`` float32."""
        self.eval()
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(waves), ERROR_BATCH):
            batch = torch.as_tensor(np.asarray(waves[start : start + ERROR_BATCH]), dtype=torch.float32)
            out.append(self.log_errors(batch.to(device)).cpu())
        return torch.cat(out).numpy()


ATTRIBUTE = "frame_ae"  # the encoder's submodule that carries the autoencoder: its weights travel with the encoder's


def attach_autoencoder(encoder: nn.Module, seed: int = 0) -> nn.Module:
    """``encoder`` carrying a new frame autoencoder (state-dict keys ``frame_ae.*``), initialized from
    ``seed``: exchanged, checkpointed and saved with the encoder, but trained apart from it
    (:mod:`coopasd.learn.autoencoder`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder.add_module(ATTRIBUTE, FrameAutoencoder())
    return encoder


def carried_autoencoder(encoder: nn.Module | None) -> FrameAutoencoder | None:
    """The frame autoencoder ``encoder`` carries, or None."""
    ae = getattr(encoder, ATTRIBUTE, None)
    return ae if isinstance(ae, FrameAutoencoder) else None


# its buffers that describe a factory's own frames, as encoder state-dict keys
LOCAL_STATISTICS = frozenset(f"{ATTRIBUTE}.{name}" for name in ("mean", "std", "fitted"))


def is_local_statistic(key: str) -> bool:
    """Whether an encoder state-dict key is the frame autoencoder's input scaling, which never leaves the
    factory (like FedBN's local statistics: each factory z-scores its frames with its own)."""
    return key in LOCAL_STATISTICS


def is_autoencoder_key(name: str) -> bool:
    """Whether a parameter or state-dict key of an encoder belongs to its frame autoencoder."""
    return name.startswith(ATTRIBUTE + ".")
