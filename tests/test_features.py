from __future__ import annotations

import numpy as np
import torch

from coopasd.features import FBANK_MEAN, FBANK_STD, beats_fbank, frames_for, kaldi_fbank, logmel_statistics
from tests.helpers import sine


def test_shapes_follow_kaldi_snip_edges():
    x = torch.randn(3, 16_000)
    out = kaldi_fbank(x)
    assert out.shape == (3, frames_for(16_000), 128) == (3, 98, 128)
    assert kaldi_fbank(x[0]).shape == (98, 128)


def test_batched_equals_one_by_one():
    x = torch.randn(4, 8000)
    batched = kaldi_fbank(x)
    assert torch.allclose(batched, torch.stack([kaldi_fbank(row) for row in x]), atol=1e-5)


def test_a_sine_peaks_in_the_right_mel_band():
    tone = torch.from_numpy(sine(1000, 0.5)) * 2**15
    mean = kaldi_fbank(tone).mean(0)
    # Kaldi mel: 1127 ln(1 + f/700); bins spaced evenly between mel(20) and mel(8000)
    mel = lambda f: 1127 * np.log1p(f / 700)  # noqa: E731
    expected = (mel(1000) - mel(20)) / ((mel(8000) - mel(20)) / 129) - 1
    assert abs(int(mean.argmax()) - expected) <= 1


def test_beats_normalization_constants():
    x = torch.randn(1, 4000) * 0.1
    assert torch.allclose(beats_fbank(x), (kaldi_fbank(x * 2**15) - FBANK_MEAN) / (2 * FBANK_STD))


def test_logmel_statistics_shape():
    assert logmel_statistics(np.random.default_rng(0).normal(size=(2, 4000)).astype(np.float32)).shape == (
        2,
        256,
    )
