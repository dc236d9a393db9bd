"""Training-time augmentation: SpecAugment-style masks on the fbank and generic pseudo-anomalies.

Pseudo-anomalies are perturbations of *normal* clips with signatures that many machine faults
share (a band that gets louder or quieter, an added harmonic tone, clicks, amplitude modulation,
a noise burst). Learning to tell them from the untouched clip makes an encoder keep the small
spectral detail that anomalies change, without any real anomalous recording.
"""

from __future__ import annotations

import math

import torch

from coopasd.config.settings import SAMPLE_RATE

PSEUDO_ANOMALIES = ("band_gain", "tone", "clicks", "modulation", "noise_burst")


def spec_augment(fbank: torch.Tensor, generator: torch.Generator, time_width: int = 20, freq_width: int = 12):
    """One time mask and one frequency mask per clip, set to the clip's mean. ``(batch, frames, bins)``."""
    out = fbank.clone()
    b, frames, bins = out.shape
    for i in range(b):
        t = int(torch.randint(0, time_width + 1, (1,), generator=generator))
        f = int(torch.randint(0, freq_width + 1, (1,), generator=generator))
        t0 = int(torch.randint(0, max(1, frames - t), (1,), generator=generator))
        f0 = int(torch.randint(0, max(1, bins - f), (1,), generator=generator))
        fill = out[i].mean()
        out[i, t0 : t0 + t, :] = fill
        out[i, :, f0 : f0 + f] = fill
    return out


def _band_noise(n: int, lo: float, hi: float, sr: int, g: torch.Generator) -> torch.Tensor:
    spec = torch.fft.rfft(torch.randn(n, generator=g))
    freqs = torch.fft.rfftfreq(n, 1 / sr)
    x = torch.fft.irfft(spec * ((freqs >= lo) & (freqs <= hi)), n)
    return x / (x.pow(2).mean().sqrt() + 1e-9)


def pseudo_anomaly(wave: torch.Tensor, kind: str, g: torch.Generator, sr: int = SAMPLE_RATE, strength: float = 0.3):
    """Perturb one normal waveform ``(samples,)`` with a generic fault signature of ``kind``."""
    n = wave.shape[0]
    rms = wave.pow(2).mean().sqrt() + 1e-9
    u = lambda lo, hi: lo + (hi - lo) * float(torch.rand((), generator=g))  # noqa: E731
    t = torch.arange(n) / sr
    if kind == "band_gain":
        lo = u(50, 6000)
        hi = lo * u(1.3, 2.0)
        spec = torch.fft.rfft(wave)
        freqs = torch.fft.rfftfreq(n, 1 / sr)
        gain = 10 ** (u(4, 10) * (1 if torch.rand((), generator=g) < 0.5 else -1) / 20)
        spec = torch.where((freqs >= lo) & (freqs <= hi), spec * gain, spec)
        return torch.fft.irfft(spec, n)
    if kind == "tone":
        f = u(60, 6000)
        return wave + strength * rms * math.sqrt(2) * torch.sin(2 * math.pi * f * t + u(0, 6.28))
    if kind == "clicks":
        rate, freq, decay = u(3, 40), u(500, 6000), u(0.0005, 0.004)
        hits = torch.zeros(n)
        start = u(0, 1 / rate)
        idx = ((torch.arange(start, n / sr, 1 / rate)) * sr).long().clamp(max=n - 1)
        hits[idx] = 1.0
        length = int(decay * 6 * sr)
        tau = torch.arange(length) / sr
        kernel = torch.exp(-tau / decay) * torch.sin(2 * math.pi * freq * tau)
        clicks = torch.nn.functional.conv1d(hits.view(1, 1, -1), kernel.flip(0).view(1, 1, -1), padding=length - 1)
        clicks = clicks.view(-1)[:n]
        return wave + 2 * strength * rms * clicks / (clicks.pow(2).mean().sqrt() + 1e-9)
    if kind == "modulation":
        return wave * (1 + u(0.2, 0.5) * torch.sin(2 * math.pi * u(2, 40) * t + u(0, 6.28)))
    if kind == "noise_burst":
        lo = u(100, 6000)
        noise = _band_noise(n, lo, lo * u(1.3, 2.5), sr, g)
        gate = torch.zeros(n)
        a = int(u(0, 0.7) * n)
        gate[a : a + int(u(0.1, 0.3) * n)] = 1.0
        return wave + strength * 1.5 * rms * noise * gate
    raise ValueError(f"unknown pseudo-anomaly '{kind}'")
