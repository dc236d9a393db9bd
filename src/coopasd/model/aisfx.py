"""The aiSFX CNN encoder (Ma & Lerch, ISMIR 2022): a backbone pre-trained on real sound-effects libraries.

The only real-audio pre-trained weights that install offline: the PyPI package ``aisfx`` 0.1.2
ships ``aisfx/models/checkpoint.pth`` inside its wheel (model X-Sequential-CE, CC BY 4.0; code MIT).
This module is our implementation of that network and of its training-time front-end, fed with our
16 kHz waveforms:

- resample 16 kHz -> 44.1 kHz with a Kaiser-windowed sinc (one strided ``conv1d``: exact polyphase,
  differentiable, no dependency);
- the log-mel aiSFX was trained on (its default Essentia path): 2048-sample frames, hop 1024, the first
  frame centred on sample 0 and frames kept while they start before the end, symmetric Hann window,
  power spectrum, 96 triangular bands linear on the HTK mel scale over 0-22050 Hz, each band's weights
  summing to 1, then ``log10(1 + 1e4 * power) / 9.4578``. No level normalization (Essentia's loader
  keeps the file's level). The package's optional librosa path differs (it peak-normalizes the clip,
  uses Hz-linear triangles and passes the spectrogram transposed to the network), so it is not followed;
- four conv blocks (3x3 conv, BN, ReLU, twice; 2x2 max-pool after blocks 1-3) of 64-128-256-512 channels;
  embedding = last block's map, mean over frequency, max over time (512).

The package embeds 100-frame blocks (about 2.3 s) with a 50-frame hop; here a whole clip is one block,
so a clip gives one embedding. Public API: :class:`AisfxConfig`, :class:`AisfxCNN`, :func:`load_aisfx`,
:func:`convert_aisfx_checkpoint`, :data:`DEFAULT_WEIGHTS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from coopasd.atomic import write_atomic
from coopasd.model.checkpoint import (
    CheckpointError,
    checkpoint_bytes,
    file_sha256,
    load_state_strict,
    read_checkpoint,
)

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "aisfx_cnn.pt"
ORIGINAL_MEMBER = "aisfx/models/checkpoint.pth"  # the checkpoint's path inside the aisfx wheel
ARCHITECTURE = "aisfx-cnn"  # meta["architecture"] of our converted files

ATTRIBUTION = (
    "aiSFX pre-trained model by Alison Bernice Ma and Alexander Lerch, from 'Representation Learning for the "
    "Automatic Indexing of Sound Effects Libraries', Proceedings of the 23rd International Society for Music "
    "Information Retrieval Conference (ISMIR 2022), pp. 866-875, https://github.com/alisonbma/aisfx "
    "(paper: https://zenodo.org/record/7316800). Model weights (c) 2022 A.B. Ma and A. Lerch, licensed under "
    "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/); package code MIT. Changes: re-keyed and "
    "re-saved for coopasd (float16 storage, classification heads dropped); the network is unchanged."
)


class AisfxWeightsError(CheckpointError):
    """The aiSFX weights file is missing, truncated, altered (checksum mismatch) or not of this model."""


@dataclass(frozen=True)
class AisfxConfig:
    """aiSFX encoder settings; the defaults are those the published weights were trained with."""

    sample_rate: int = 16_000  # rate of the waveforms given to forward() [Hz]; resampled to model_rate
    model_rate: int = 44_100  # rate of the front-end the CNN was trained on [Hz]
    n_fft: int = 2048  # frame and window length [samples at model_rate]
    hop_length: int = 1024  # frame hop [samples at model_rate] (23 ms)
    n_mels: int = 96  # mel bands
    f_min: float = 0.0  # lowest band edge [Hz]
    f_max: float = 22_050.0  # highest band edge [Hz]
    log_gain: float = 1e4  # compression: log10(1 + log_gain * band power)
    log_max: float = 9.457798957824707  # the compressed log-mel is divided by this (aiSFX's training maximum)
    channels: tuple[int, ...] = (64, 128, 256, 512)  # output channels of the conv blocks
    pools: tuple[int, ...] = (2, 2, 2, 1)  # max-pool size after each block (1: none)
    resample_half_width: int = 64  # sinc half-width [samples at the lower of the two rates]
    resample_rolloff: float = 0.945  # resampler cutoff as a fraction of the lower Nyquist
    resample_beta: float = 14.769656459379492  # Kaiser window shape of the resampler

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> AisfxConfig:
        """From a ``cfg`` dict (lists become tuples); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(cfg) - known)
        if extra:
            raise ValueError(f"unknown aiSFX config key(s) {extra}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# ---------------------------------------------------------------------------------------------- front-end


def sinc_resampling_kernel(
    orig_rate: int, new_rate: int, half_width: int = 64, rolloff: float = 0.945, beta: float = 14.769656459379492
) -> tuple[np.ndarray, int, int, int]:
    """Polyphase kernel of a Kaiser-windowed sinc low-pass, one row per output phase.

    Output sample ``n = m * up + p`` lies at input time ``t = n * down / up``; row ``p`` holds the filter
    taps ``h(t - j)`` for the input samples ``j = m * down + q - pad`` (``q`` the column).
    Returns ``(kernel (up, taps) float64, up, down, pad)``.
    """
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    scale = min(1.0, up / down)  # cutoff relative to the input Nyquist (narrower when downsampling)
    reach = half_width / scale  # filter half-support [input samples]
    pad = math.ceil(reach)
    phase_time = np.arange(up) * down / up
    base = np.floor(phase_time).astype(np.int64)
    taps = int(base.max()) + 2 * pad + 2
    q = np.arange(taps)
    offset = phase_time[:, None] - (q[None, :] - pad)  # t - j [input samples]
    u = offset * scale / half_width
    window = np.where(np.abs(u) <= 1.0, np.i0(beta * np.sqrt(np.clip(1.0 - u * u, 0.0, None))) / np.i0(beta), 0.0)
    kernel = scale * rolloff * np.sinc(scale * rolloff * offset) * window
    return kernel, up, down, pad


class SincResampler(nn.Module):
    """Band-limited rational resampling ``orig_rate -> new_rate`` as one strided ``conv1d`` (differentiable).

    A Kaiser-windowed sinc (half-width 64 samples, cutoff 0.945 of the lower Nyquist, beta 14.77:
    resampy's ``kaiser_best`` design, the one librosa 0.9 used to load aiSFX's inputs) evaluated exactly
    for each of the ``up`` output phases; samples outside the clip count as zeros.
    """

    def __init__(
        self,
        orig_rate: int,
        new_rate: int,
        half_width: int = 64,
        rolloff: float = 0.945,
        beta: float = 14.769656459379492,
    ) -> None:
        super().__init__()
        kernel, self.up, self.down, self.pad = sinc_resampling_kernel(orig_rate, new_rate, half_width, rolloff, beta)
        self.identity = self.up == self.down
        self.register_buffer("kernel", torch.from_numpy(kernel).float().unsqueeze(1), persistent=False)

    def output_length(self, samples: int) -> int:
        """Output samples for ``samples`` input samples: ``ceil(samples * new / orig)``."""
        return -(-samples * self.up // self.down)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` at ``orig_rate`` -> ``(batch, ceil(samples * new / orig))`` at ``new_rate``."""
        if self.identity:
            return waves
        batch, samples = waves.shape
        n_out = self.output_length(samples)
        frames = -(-n_out // self.up)
        right = max(0, (frames - 1) * self.down + self.kernel.shape[-1] - self.pad - samples)
        x = F.pad(waves.unsqueeze(1), (self.pad, right))
        y = F.conv1d(x, self.kernel.to(waves.dtype), stride=self.down)  # (batch, up, frames)
        return y.transpose(1, 2).reshape(batch, -1)[:, :n_out]


def hz_to_htk_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangles linear on the HTK mel scale, each row summing to 1.

    Band ``i`` rises from mel edge ``i`` to ``i + 1`` and falls to ``i + 2`` (``n_mels + 2`` edges evenly
    spaced in mel between ``f_min`` and ``f_max``): Essentia's ``MelBands(warpingFormula='htkMel',
    weighting='warping', normalize='unit_sum')``, which aiSFX was trained with. It differs from librosa's
    ``mel(htk=True, norm=1)`` (triangles linear in Hz) by at most 0.0035 per weight at aiSFX's settings.
    """
    edges = np.linspace(hz_to_htk_mel(f_min), hz_to_htk_mel(f_max), n_mels + 2)
    bins = hz_to_htk_mel(np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    weights = np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    sums = weights.sum(axis=1, keepdims=True)
    return weights / np.where(sums > 0, sums, 1.0)


class LogMel(nn.Module):
    """aiSFX's log-mel front-end (its Essentia path) in torch."""

    def __init__(self, cfg: AisfxConfig) -> None:
        super().__init__()
        self.cfg = cfg
        window = torch.hann_window(cfg.n_fft, periodic=False, dtype=torch.float64).float()  # symmetric, as Essentia
        fbank = mel_filterbank(cfg.model_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("fbank", torch.from_numpy(fbank).float(), persistent=False)

    def frames(self, samples: int) -> int:
        """Frames of a ``samples``-long clip: centred on 0, hop, ..., while a frame starts before the end."""
        return -(-samples // self.cfg.hop_length) + 1

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` at ``model_rate`` -> normalized log-mel ``(batch, frames, n_mels)``."""
        cfg = self.cfg
        samples = waves.shape[-1]
        tail = (self.frames(samples) - 1) * cfg.hop_length - samples  # zeros so that the last frame is kept
        spec = torch.stft(
            F.pad(waves, (0, tail)),
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            window=self.window.to(waves.dtype),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (batch, n_fft // 2 + 1, frames)
        power = torch.view_as_real(spec).pow(2).sum(-1)  # |X|^2 without abs(): finite gradients at 0
        mel = torch.matmul(self.fbank.to(power.dtype), power)  # (batch, n_mels, frames)
        return (torch.log10(1.0 + cfg.log_gain * mel) / cfg.log_max).transpose(1, 2)


# ---------------------------------------------------------------------------------------------- network


class ConvBlock(nn.Module):
    """(3x3 conv, no bias -> BN -> ReLU) twice, then a ``pool x pool`` max-pool (none when pool is 1)."""

    def __init__(self, in_channels: int, out_channels: int, pool: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1: nn.Module = nn.BatchNorm2d(out_channels)  # nn.Identity once folded (AisfxCNN.for_inference)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2: nn.Module = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in, time, freq)`` -> ``(batch, out, time // pool, freq // pool)``."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.max_pool2d(x, self.pool) if self.pool > 1 else x


def clip_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """aiSFX clip pooling (mean over freq, max over time): ``(batch, ch, time, freq)`` -> ``(batch, ch)``."""
    return feature_map.mean(dim=3).amax(dim=2)


class AisfxCNN(nn.Module):
    """aiSFX encoder with its front-end inside: ``(batch, samples)`` waveforms at ``cfg.sample_rate`` in.

    ``forward`` gives the published 512-d embedding; :meth:`feature_maps` and :meth:`block_embeddings`
    expose every block for other poolings or layers. Every step is differentiable (fine-tuning, LoRA);
    put the model in ``train()`` only if BatchNorm statistics should adapt too.
    """

    def __init__(self, cfg: AisfxConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or AisfxConfig()
        if len(cfg.channels) != len(cfg.pools):
            raise ValueError("AisfxConfig.channels and .pools must have the same length")
        self.cfg = cfg
        self.resampler = SincResampler(
            cfg.sample_rate, cfg.model_rate, cfg.resample_half_width, cfg.resample_rolloff, cfg.resample_beta
        )
        self.logmel = LogMel(cfg)
        ins = (1, *cfg.channels[:-1])
        self.blocks = nn.ModuleList(ConvBlock(i, o, p) for i, o, p in zip(ins, cfg.channels, cfg.pools, strict=True))
        self.channels_last = False  # feature maps in channels-last layout (set by :meth:`for_inference`)

    def for_inference(self) -> AisfxCNN:
        """This encoder prepared for frozen inference, in place: every BatchNorm folded into its convolution
        (eval statistics) and channels-last maps, oneDNN's faster layout. Same embeddings within float32
        rounding (about 2e-6 of the largest value), about 1.5x faster on CPU; not for training."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        self.eval()
        for block in self.blocks:
            if isinstance(block.bn1, nn.BatchNorm2d):
                block.conv1, block.bn1 = fuse_conv_bn_eval(block.conv1, block.bn1), nn.Identity()
                block.conv2, block.bn2 = fuse_conv_bn_eval(block.conv2, block.bn2), nn.Identity()
        self.blocks.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self.requires_grad_(False)

    @property
    def embedding_dim(self) -> int:
        return self.cfg.channels[-1]

    @property
    def min_frames(self) -> int:
        """Fewest log-mel frames that leave at least one time step after the pools."""
        return math.prod(self.cfg.pools)

    def min_samples(self) -> int:
        """Shortest accepted input, in samples at ``cfg.sample_rate`` (about 0.14 s)."""
        n = 1
        while self.logmel.frames(self.resampler.output_length(n)) < self.min_frames:
            n *= 2
        lo, hi = n // 2, n
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.logmel.frames(self.resampler.output_length(mid)) < self.min_frames else (lo, mid)
        return hi

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """Normalized log-mel ``(batch, frames, n_mels)`` of ``(batch, samples)`` waveforms at ``cfg.sample_rate``."""
        if waves.dim() != 2:
            raise ValueError(f"expected (batch, samples) waveforms, got shape {tuple(waves.shape)}")
        if waves.shape[-1] < self.min_samples():
            raise ValueError(
                f"clip of {waves.shape[-1]} samples is too short for aiSFX: it needs at least {self.min_samples()} "
                f"samples at {self.cfg.sample_rate} Hz ({self.min_frames} frames)"
            )
        return self.logmel(self.resampler(waves))

    def encode_features(self, logmel: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output map ``(batch, channels_i, time_i, freq_i)`` of a ``(batch, frames, n_mels)`` log-mel."""
        x = logmel.unsqueeze(1)  # (batch, 1, time, freq)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps

    def feature_maps(self, waves: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output map ``(batch, channels_i, time_i, freq_i)``; time_4 is about frames / 8."""
        return self.encode_features(self.features(waves))

    def block_embeddings(self, waves: torch.Tensor) -> list[torch.Tensor]:
        """Every block's map pooled like the embedding (mean freq, max time): ``[(batch, 64), ..., (batch, 512)]``."""
        return [clip_pool(m) for m in self.feature_maps(waves)]

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """The aiSFX embedding ``(batch, 512)`` of ``(batch, samples)`` float waveforms at ``cfg.sample_rate``."""
        return clip_pool(self.feature_maps(waves)[-1])


# ---------------------------------------------------------------------------------------------- weights


def _numpy_safe_globals() -> list[Any]:
    """Exactly the numpy types the original file pickles: its ``np.int64`` dataset indices."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return [
        (scalar, "numpy.core.multiarray.scalar"),  # the name in the shipped file (pickled with numpy 1)
        (scalar, "numpy._core.multiarray.scalar"),  # the name numpy 2 writes
        np.dtype,
        type(np.dtype(np.int64)),
    ]


def read_original_checkpoint(
    source: Path | bytes, name: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, int]]]:
    """State dict and training datasets of the original ``checkpoint.pth`` (a path, or its bytes).

    The file unpickles to ``(state_dict, {dataset: (np.int64 index, classes)})``; it is read with
    ``torch.load(weights_only=True)`` and only numpy's scalar and int64 dtype allow-listed, so any other
    pickled object is refused. ``name`` is how errors call the source (default: the path).
    Returns ``(state_dict, {dataset: {"index": i, "classes": n}})``.
    """
    name = name or ("<bytes>" if isinstance(source, bytes) else str(source))
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            payload = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        lines = [line.strip() for line in str(err).splitlines() if "Unsupported global" in line]
        reason = lines[0] if lines else str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AisfxWeightsError(f"{name}: not a readable aiSFX checkpoint: {reason}") from err
    if not (isinstance(payload, tuple | list) and len(payload) == 2 and all(isinstance(p, dict) for p in payload)):
        raise AisfxWeightsError(f"{name}: expected (state_dict, datasets), found {type(payload).__name__}")
    state, datasets = payload
    try:
        info = {str(k): {"index": int(v[0]), "classes": int(v[1])} for k, v in datasets.items()}
    except (TypeError, ValueError, IndexError) as err:
        raise AisfxWeightsError(f"{name}: datasets entry is not {{name: (index, classes)}}: {err}") from err
    return dict(state), info


def original_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``embedding_net.conv_block{i}.*`` to ``blocks.{i-1}.*``; the per-dataset heads ``fc.*`` are dropped."""
    ours = {}
    for key, value in state.items():
        if key.startswith("embedding_net.conv_block"):
            block, rest = key.removeprefix("embedding_net.conv_block").split(".", 1)
            ours[f"blocks.{int(block) - 1}.{rest}"] = value
    return ours


def _read_source(source: Path) -> tuple[bytes, dict[str, str]]:
    """The original checkpoint's bytes, from the wheel (``*.whl``) or the extracted ``checkpoint.pth``."""
    origin: dict[str, str] = {}
    if source.suffix == ".whl":
        origin = {"wheel": source.name, "wheel_sha256": file_sha256(source), "member": ORIGINAL_MEMBER}
        with zipfile.ZipFile(source) as wheel:
            raw = wheel.read(ORIGINAL_MEMBER)
    else:
        raw = source.read_bytes()
    return raw, origin


def convert_aisfx_checkpoint(
    src_pth: Path | str, out: Path | str, dtype: torch.dtype = torch.float16, command: str = ""
) -> dict[str, Any]:
    """Convert the original aiSFX checkpoint into our ``{"cfg", "model", "meta"}`` file, plus its record.

    Args:
        src_pth: the aisfx wheel (``aisfx-0.1.2-py2.py3-none-any.whl``) or its extracted ``checkpoint.pth``.
        out: the ``.pt`` to write (atomically); the record is written beside it as ``out.with_suffix(".json")``.
        dtype: storage dtype of the floating-point tensors (float16 halves the file; see the record).
        command: the command line to note in the record.
    Returns:
        The record written: sources and their sha256, our file's sha256, license, attribution, datasets.
    """
    src, out = Path(src_pth), Path(out)
    raw, origin = _read_source(src)
    state, datasets = read_original_checkpoint(raw, f"{src}:{ORIGINAL_MEMBER}" if origin else str(src))
    ours = original_to_ours(state)
    cfg = AisfxConfig()
    load_state_strict(AisfxCNN(cfg), ours, src)  # every key and shape fits before anything is written
    stored = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ours.items()}
    meta = {
        "architecture": ARCHITECTURE,
        "source": "aisfx 0.1.2 (PyPI), " + ORIGINAL_MEMBER,
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "dtype": str(dtype).removeprefix("torch."),
        "license": "CC BY 4.0 (model weights)",
        "attribution": ATTRIBUTION,
    }
    write_atomic(out, checkpoint_bytes(cfg.to_dict(), stored, meta))
    record = {
        "name": out.stem,
        "what": "aiSFX X-Sequential-CE encoder (4 conv blocks, 64-128-256-512 channels) pre-trained on real "
        "sound-effects libraries; 512-d clip embedding (mean over frequency, max over time of block 4)",
        "source": {
            "package": "aisfx",
            "version": "0.1.2",
            "wheel": origin.get("wheel", "aisfx-0.1.2-py2.py3-none-any.whl"),
            **({"wheel_sha256": origin["wheel_sha256"]} if "wheel_sha256" in origin else {}),
            "member": ORIGINAL_MEMBER,
            "checkpoint_sha256": meta["source_sha256"],
            "checkpoint_bytes": len(raw),
            "url": "https://github.com/alisonbma/aisfx",
        },
        "converted": {
            "file": out.name,
            "sha256": file_sha256(out),
            "bytes": out.stat().st_size,
            "dtype": meta["dtype"],
            "parameters": sum(v.numel() for k, v in ours.items() if v.is_floating_point() and "running" not in k),
            "format": '{"cfg": AisfxConfig dict, "model": state_dict, "meta": dict} (torch.save)',
            "keys": "embedding_net.conv_block{i}.* -> blocks.{i-1}.*",
            "torch": torch.__version__,
        },
        "command": command or f"python -m coopasd.model.aisfx {src.name} {out}",
        "license": {
            "model": "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)",
            "code": "MIT (the aisfx package; coopasd's implementation is its own)",
            "copyright": "(c) 2022 A.B. Ma and A. Lerch",
        },
        "attribution": ATTRIBUTION,
        "citation": {
            "authors": ["Alison Bernice Ma", "Alexander Lerch"],
            "title": "Representation Learning for the Automatic Indexing of Sound Effects Libraries",
            "venue": "Proceedings of the 23rd International Society for Music Information Retrieval Conference "
            "(ISMIR 2022), pp. 866-875",
            "url": "https://zenodo.org/record/7316800",
        },
        "head": {
            "shipped": False,
            "note": "the original file also holds one classifier head per training dataset "
            "(512-256-128-classes MLPs, 1.5 M parameters); unused for embeddings, so not shipped. Class names are "
            "not in the file; per the package README the UCS-compliant sets (prosfx, soundlyTrain, ucsMixed) use "
            "UCS coarse 'Category' classes.",
            "datasets": {k: v["classes"] for k, v in datasets.items()},
        },
        "frontend": "44.1 kHz; 2048/1024 frames (first centred on 0), symmetric Hann, power, 96 HTK-mel bands "
        "0-22050 Hz (mel-linear triangles, unit sum), log10(1 + 1e4 x) / 9.4578; coopasd resamples 16 kHz input "
        "with a Kaiser-windowed sinc",
    }
    write_atomic(out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    return record


def _expected_sha256(path: Path, expected: str | None) -> tuple[str | None, str]:
    if expected is not None:
        return expected, "the expected sha256"
    record = path.with_suffix(".json")
    if not record.is_file():
        if path == DEFAULT_WEIGHTS:
            raise AisfxWeightsError(f"{path}: its record {record.name} is missing, so the file cannot be verified")
        return None, ""
    try:
        return str(json.loads(record.read_text())["converted"]["sha256"]), f"its record {record}"
    except (ValueError, KeyError, TypeError) as err:
        raise AisfxWeightsError(f"{record}: not an aiSFX weights record ({err})") from err


def expected_weights_sha256(path: Path | str = DEFAULT_WEIGHTS) -> str:
    """The sha256 the record beside ``path`` gives for it (what a factory model stores to re-find its weights)."""
    want, _ = _expected_sha256(Path(path), None)
    if want is None:
        raise AisfxWeightsError(f"{path}: no record beside it gives its sha256")
    return want


def load_aisfx(
    path: Path | str = DEFAULT_WEIGHTS, *, sample_rate: int | None = None, expected_sha256: str | None = None
) -> AisfxCNN:
    """The aiSFX encoder with converted weights, float32, in eval mode.

    The file's sha256 is checked against ``expected_sha256`` or else the record beside it
    (``path.with_suffix(".json")``; required for the shipped file, optional for others).
    ``sample_rate`` overrides the input rate (default: the file's, 16 kHz).
    Raises :class:`AisfxWeightsError` naming the file when it is missing, altered, truncated or not aiSFX's.
    """
    path = Path(path)
    if not path.is_file():
        raise AisfxWeightsError(f"{path}: aiSFX weights file does not exist")
    want, against = _expected_sha256(path, expected_sha256)
    if want is not None:
        got = file_sha256(path)
        if got != want:
            raise AisfxWeightsError(
                f"{path}: sha256 {got[:16]}... does not match {against} ({want[:16]}...): "
                "the file is corrupt, truncated or was replaced"
            )
    payload = read_checkpoint(path)
    if payload.get("meta", {}).get("architecture") != ARCHITECTURE:
        raise AisfxWeightsError(f"{path}: not an aiSFX weights file (meta.architecture is not '{ARCHITECTURE}')")
    try:
        cfg = AisfxConfig.from_dict(payload["cfg"])
    except (TypeError, ValueError) as err:
        raise AisfxWeightsError(f"{path}: 'cfg' does not describe the aiSFX encoder ({err})") from err
    if sample_rate is not None:
        cfg = dataclasses.replace(cfg, sample_rate=sample_rate)
    model = AisfxCNN(cfg)
    load_state_strict(model, {k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()}, path)
    return model.eval()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m coopasd.model.aisfx SOURCE OUT [--dtype float32]``: the one-off conversion."""
    parser = argparse.ArgumentParser(prog="python -m coopasd.model.aisfx", description=main.__doc__)
    parser.add_argument("source", type=Path, help="aisfx-0.1.2-py2.py3-none-any.whl or its checkpoint.pth")
    parser.add_argument("out", type=Path, help="converted file, e.g. src/coopasd/weights/aisfx_cnn.pt")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    args = parser.parse_args(argv)
    command = (
        f"pip download aisfx==0.1.2 --no-deps -d . && python -m coopasd.model.aisfx {args.source.name} {args.out}"
        + (f" --dtype {args.dtype}" if args.dtype != "float16" else "")
    )
    convert_aisfx_checkpoint(args.source, args.out, getattr(torch, args.dtype), command)


if __name__ == "__main__":
    main()
