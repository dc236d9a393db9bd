from __future__ import annotations

import numpy as np
import torch

from coopasd.data.features import FBANK_MEAN, FBANK_STD, beats_fbank, frames_for, kaldi_fbank, logmel_statistics
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


# ---- agreement with reference implementations (fetched from PyPI, never shipped)
def _signals() -> dict[str, torch.Tensor]:
    from coopasd.data.synth import SynthConfig, render_clip

    rng = np.random.default_rng(0)
    machine = render_clip(SynthConfig(machines=("gearbox",), seconds=1.0), "gearbox", "test", "target", "anomaly", 1)[0]
    return {
        "noise": torch.from_numpy(rng.normal(scale=0.1, size=16_000).astype(np.float32)),
        "sine": torch.from_numpy(sine(440, 1.0)),
        "machine": torch.from_numpy(machine),
    }


def test_matches_torchaudio_kaldi_fbank_as_beats_calls_it():
    from tests.helpers.oracles import reference_kaldi

    kaldi = reference_kaldi()
    for name, wave in _signals().items():
        x = wave * 2**15
        ref = kaldi.fbank(x.unsqueeze(0), num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10)
        assert torch.equal(kaldi_fbank(x), ref), name  # bit-exact, float32 as BEATs runs it
        assert torch.equal(kaldi_fbank(x.double()), kaldi.fbank(x.double().unsqueeze(0), num_mel_bins=128)), name


def test_matches_kaldi_native_fbank_at_80_bins():
    import kaldi_native_fbank as knf

    from coopasd.data.features import FbankConfig

    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.mel_opts.num_bins = 80
    opts.mel_opts.high_freq = 0  # torchaudio's default (Nyquist); Kaldi's own default is -400
    for name, wave in _signals().items():
        x = (wave * 2**15).numpy()
        online = knf.OnlineFbank(opts)
        online.accept_waveform(16000, x.tolist())
        online.input_finished()
        ref = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
        ours = kaldi_fbank(torch.from_numpy(x), FbankConfig(num_mel_bins=80)).numpy()
        assert ours.shape == ref.shape
        diff = np.abs(ours - ref)
        # bins more than 100 dB below the frame's peak are float32 round-off in any implementation
        audible = ref > ref.max(axis=1, keepdims=True) - np.log(1e10)
        assert diff[audible].max() < 5e-3, name
        if name != "sine":  # broadband signals have no such bins
            assert diff.max() < 1e-3, name
