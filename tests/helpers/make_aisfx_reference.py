"""Write tests/data/aisfx_reference.npz: embeddings of the ORIGINAL aiSFX code for deterministic clips.

Not run by the tests (it needs the original package and Essentia, which coopasd does not depend on).
It runs in a throwaway venv, because aisfx 0.1.2 pins numpy 1.23.0 (no wheel for Python 3.11) and librosa 0.9.2:

    python3.11 -m venv /tmp/aisfx-venv
    /tmp/aisfx-venv/bin/pip install aisfx==0.1.2 --no-deps
    /tmp/aisfx-venv/bin/pip install librosa==0.9.2 numpy==1.26.4 "numba<0.61" resampy==0.4.3 scipy==1.13.1 \
        tqdm torch==2.13.0 soundfile soxr essentia==2.1b6.dev1389 pyyaml six "setuptools<70"
    /tmp/aisfx-venv/bin/python tests/helpers/make_aisfx_reference.py tests/data/aisfx_reference.npz

The reference is the package's default (and the paper's) path: Essentia's ``compute_spectrogram`` on a
wav file, ``spectrogram_normalize(spec_norm='original')``, then ``EmbeddingNet.forward`` of the model
``load_bestModel`` builds from the shipped ``checkpoint.pth``, with the whole clip as one block.
Two inputs per clip:

- ``ref44``: the clip synthesized at 44.1 kHz (no resampling anywhere): checks our front-end + CNN;
- ``ref16``: the clip synthesized at 16 kHz, written as a 16 kHz wav and loaded by Essentia's EasyLoader at
  44.1 kHz (libsamplerate): checks our end-to-end path from 16 kHz, resampler included.

``make_clips`` only needs numpy: the test imports it to regenerate the same inputs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

CLIP_SECONDS = (2.0, 2.0, 1.5, 3.3)
CLIP_NAMES = ("noise", "sweep", "machine", "clicks")


def make_clip(kind: str, sample_rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    """One deterministic float32 clip, the same sound at any rate (noise: same statistics, other samples)."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng(seed)
    if kind == "noise":  # white noise
        x = 0.1 * rng.standard_normal(n)
    elif kind == "sweep":  # exponential sweep 100 Hz -> 7 kHz
        f0, f1 = 100.0, 7000.0
        k = np.log(f1 / f0) / seconds
        x = 0.3 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    elif kind == "machine":  # 50 Hz hum with harmonics, a 1.2 kHz whine beating at 3 Hz, smoothed noise
        x = sum(0.2 / h * np.sin(2 * np.pi * 50 * h * t + h) for h in range(1, 12))
        x = x + 0.05 * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 1200 * t)
        noise = rng.standard_normal(n)
        kernel = np.hanning(max(3, sample_rate // 2000))
        x = x + 0.05 * np.convolve(noise, kernel / kernel.sum(), mode="same")
    elif kind == "clicks":  # 12 Hz clicks ringing at 900 Hz and 3.1 kHz over a low rumble
        phase = (t * 12.0) % 1.0 / 12.0
        ring = np.exp(-phase * 60) * (np.sin(2 * np.pi * 900 * phase) + 0.5 * np.sin(2 * np.pi * 3100 * phase))
        x = 0.4 * ring + 0.05 * np.sin(2 * np.pi * 35 * t) + 0.01 * rng.standard_normal(n)
    else:
        raise ValueError(kind)
    return np.asarray(x, dtype=np.float32)


def make_clips(sample_rate: int) -> list[np.ndarray]:
    """The fixture's clips at ``sample_rate``, in CLIP_NAMES order."""
    return [make_clip(k, sample_rate, s, seed=i) for i, (k, s) in enumerate(zip(CLIP_NAMES, CLIP_SECONDS, strict=True))]


def main(out: Path) -> None:  # pragma: no cover - runs in the throwaway venv only
    import aisfx
    import soundfile as sf
    import torch
    from aisfx.inference import load_bestModel
    from aisfx.preprocessing import spectrogram_normalize
    from aisfx.spectrogram import spectrogram_essentia
    from numpy.core.multiarray import scalar

    pth = Path(aisfx.__file__).parent / "models" / "checkpoint.pth"
    allowed = [(scalar, "numpy.core.multiarray.scalar"), np.dtype, type(np.dtype(np.int64))]
    with torch.serialization.safe_globals(allowed):
        weights, datasets = torch.load(pth, map_location="cpu", weights_only=True)
    model = load_bestModel(weights, datasets, "cpu")
    torch.set_num_threads(2)

    def reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
        spec = spectrogram_essentia.compute_spectrogram(
            str(path), sr=44100.0, block_size=2048, hop_size=1024, n_mels=96, f_min=0.0, f_max=22050.0
        )  # (frames, 96), the orientation EmbeddingNet expects
        spec = spectrogram_normalize(spec, spec_norm="original").astype(np.float32)
        with torch.no_grad():
            emb = model.get_embedding(torch.from_numpy(spec)[None])[0].numpy()
        return emb, spec

    arrays: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rate, tag in ((44100, "ref44"), (16000, "ref16")):
            embs = []
            for name, clip in zip(CLIP_NAMES, make_clips(rate), strict=True):
                wav = Path(tmp) / f"{name}_{rate}.wav"
                sf.write(wav, clip, rate, subtype="FLOAT")
                emb, spec = reference(wav)
                embs.append(emb)
                if tag == "ref44" and name in ("noise", "machine"):
                    arrays[f"logmel44_{name}"] = spec
            arrays[tag] = np.stack(embs)
    arrays["clip_names"] = np.array(CLIP_NAMES)
    arrays["clip_seconds"] = np.array(CLIP_SECONDS)
    arrays["input16_sums"] = np.array([np.abs(c).astype(np.float64).sum() for c in make_clips(16000)])
    arrays["input44_sums"] = np.array([np.abs(c).astype(np.float64).sum() for c in make_clips(44100)])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)


if __name__ == "__main__":  # pragma: no cover
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("tests/data/aisfx_reference.npz"))
