"""Kaldi-compatible log-mel filterbank in plain torch (batched), as BEATs expects it.

Matches ``torchaudio.compliance.kaldi.fbank`` with BEATs' arguments: 16 kHz, 128 mel bins,
25 ms frames, 10 ms shift, povey window, pre-emphasis 0.97, DC removal, snip_edges, power
spectrum, low frequency 20 Hz, high frequency Nyquist, no dither. BEATs scales the waveform by
2**15 first and normalizes the result as ``(x - FBANK_MEAN) / (2 * FBANK_STD)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from coopasd.config.settings import SAMPLE_RATE

WAVE_SCALE = 2.0**15  # BEATs multiplies [-1, 1] float audio by this before the fbank
FBANK_MEAN = 15.41663  # BEATs' dataset statistics of the log-mel fbank
FBANK_STD = 6.55582
_EPSILON = torch.finfo(torch.float32).eps


@dataclass(frozen=True)
class FbankConfig:
    """Kaldi fbank settings; defaults are BEATs'."""

    sample_rate: int = SAMPLE_RATE  # Hz
    num_mel_bins: int = 128  # mel filters
    frame_length_ms: float = 25.0  # analysis window
    frame_shift_ms: float = 10.0  # hop
    preemphasis: float = 0.97  # x[t] - 0.97 x[t-1]
    low_freq: float = 20.0  # Hz, lowest mel edge
    high_freq: float = 0.0  # Hz; <= 0 means Nyquist + high_freq (Kaldi convention)

    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def padded_window_size(self) -> int:
        return 1 << (self.window_size - 1).bit_length()


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * (1.0 + freq / 700.0).log()  # as torchaudio writes it (not log1p: float32 rounding)


def mel_filterbank(cfg: FbankConfig) -> torch.Tensor:
    """Kaldi's triangular mel filters, ``(num_mel_bins, padded_window_size // 2 + 1)``.

    Computed in float32 like torchaudio's ``get_mel_banks`` (the banks BEATs was trained with).
    """
    n_fft_bins = cfg.padded_window_size // 2
    nyquist = 0.5 * cfg.sample_rate
    high = cfg.high_freq if cfg.high_freq > 0 else nyquist + cfg.high_freq
    mel_low = 1127.0 * math.log(1.0 + cfg.low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high / 700.0)
    delta = (mel_high - mel_low) / (cfg.num_mel_bins + 1)
    idx = torch.arange(cfg.num_mel_bins).unsqueeze(1)
    left, center, right = mel_low + idx * delta, mel_low + (idx + 1.0) * delta, mel_low + (idx + 2.0) * delta
    bin_mel = _mel(cfg.sample_rate / cfg.padded_window_size * torch.arange(n_fft_bins)).unsqueeze(0)
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))  # Kaldi leaves the Nyquist bin out


def povey_window(size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.hann_window(size, periodic=False, dtype=dtype).pow(0.85)


def kaldi_fbank(waves: torch.Tensor, cfg: FbankConfig = FbankConfig()) -> torch.Tensor:
    """Log-mel fbank of raw waveforms (already scaled as the caller wants).

    Args:
        waves: ``(batch, samples)`` or ``(samples,)`` float tensor (float64 stays float64, else float32).
    Returns:
        ``(batch, frames, num_mel_bins)`` (or ``(frames, num_mel_bins)``), frames = 1 + (samples - 400) // 160.
    """
    single = waves.dim() == 1
    x = waves.unsqueeze(0) if single else waves
    x = x if x.dtype == torch.float64 else x.to(torch.float32)
    size, shift = cfg.window_size, cfg.window_shift
    if x.shape[1] < size:
        raise ValueError(f"waveform of {x.shape[1]} samples is shorter than one {size}-sample frame")
    frames = x.unfold(1, size, shift)  # (batch, frames, size)
    frames = frames - frames.mean(dim=2, keepdim=True)
    if cfg.preemphasis:
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=2)
        frames = frames - cfg.preemphasis * previous
    frames = frames * povey_window(size, frames.dtype).to(frames.device)
    frames = torch.nn.functional.pad(frames, (0, cfg.padded_window_size - size))
    power = torch.fft.rfft(frames).abs().pow(2)
    mel = torch.matmul(power, mel_filterbank(cfg).to(power).T)
    out = torch.clamp(mel, min=_EPSILON).log()
    return out[0] if single else out


def beats_fbank(waves: torch.Tensor, cfg: FbankConfig = FbankConfig()) -> torch.Tensor:
    """BEATs input: fbank of ``waves * 2**15``, normalized with BEATs' mean and std.

    ``waves``: ``(batch, samples)`` float audio in [-1, 1] at 16 kHz -> ``(batch, frames, 128)``.
    """
    return (kaldi_fbank(waves * WAVE_SCALE, cfg) - FBANK_MEAN) / (2 * FBANK_STD)


def logmel_moments(waves: torch.Tensor, cfg: FbankConfig = FbankConfig()) -> torch.Tensor:
    """Per-band mean and standard deviation over time of the log-mel fbank, ``(batch, samples)`` ->
    ``(batch, 2 * num_mel_bins)`` float32.

    Computed in float64: in float32 the lowest mel bins (attenuated by pre-emphasis and DC removal)
    carry FFT round-off of about 1e-3 that differs between FFT libraries, and z-scored statistics
    amplify it; in float64 torch, ONNX Runtime and numpy agree.
    """
    fb = kaldi_fbank(waves.to(torch.float64) * WAVE_SCALE, cfg)
    return torch.cat([fb.mean(dim=1), fb.std(dim=1)], dim=1).to(torch.float32)


def logmel_statistics(waves: np.ndarray | torch.Tensor, cfg: FbankConfig = FbankConfig()) -> np.ndarray:
    """:func:`logmel_moments` of ``(batch, samples)`` waveforms as numpy ``(batch, 2 * num_mel_bins)``:
    the non-learned baseline's clip features."""
    with torch.no_grad():
        return logmel_moments(torch.as_tensor(np.asarray(waves)), cfg).numpy()


def frames_for(samples: int, cfg: FbankConfig = FbankConfig()) -> int:
    """Number of fbank frames Kaldi's snip_edges rule gives for ``samples``."""
    return 1 + (samples - cfg.window_size) // cfg.window_shift if samples >= cfg.window_size else 0


__all__ = [
    "FBANK_MEAN",
    "FBANK_STD",
    "WAVE_SCALE",
    "FbankConfig",
    "beats_fbank",
    "frames_for",
    "kaldi_fbank",
    "logmel_moments",
    "logmel_statistics",
    "mel_filterbank",
]
