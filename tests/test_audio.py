from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from coopasd.data.audio import fix_length, load_audio, load_many
from coopasd.errors import AudioError, BadClipsError
from tests.helpers import sine, write_wav


def _peak_hz(wave: np.ndarray, rate: int = 16_000) -> float:
    spec = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spec.argmax()])


def test_mono_float32_fixed_length(tmp_path):
    path = write_wav(tmp_path / "a.wav", sine(1000, 1.0))
    wave = load_audio(path, seconds=0.5)
    assert wave.dtype == np.float32 and wave.shape == (8000,)
    assert abs(_peak_hz(wave) - 1000) < 3


def test_stereo_channels_are_averaged(tmp_path):
    left, right = sine(500, 0.5, amp=0.4), np.zeros(8000, np.float32)
    path = write_wav(tmp_path / "s.wav", np.stack([left, right], axis=1))
    wave = load_audio(path)
    assert np.allclose(wave, left / 2, atol=1e-3)


def test_other_rates_are_resampled(tmp_path):
    path = write_wav(tmp_path / "hi.flac", sine(1500, 1.0, rate=44_100), rate=44_100, subtype="PCM_16")
    wave = load_audio(path)
    assert wave.shape == (16_000,)
    assert abs(_peak_hz(wave) - 1500) < 2


def test_fix_length_crops_from_start_and_tiles_short_clips():
    x = np.arange(5, dtype=np.float32)
    assert fix_length(x, 3).tolist() == [0, 1, 2]
    assert fix_length(x, 12).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file") as info:
        load_audio(path)
    assert "empty.wav" in str(info.value)


def test_not_audio(tmp_path):
    path = tmp_path / "text.wav"
    path.write_text("this is not a wav file at all" * 20)
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(path)


def test_truncated_wav(tmp_path):
    path = write_wav(tmp_path / "cut.wav", sine(300, 1.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match="truncated WAV"):
        load_audio(path)


def test_corrupt_flac(tmp_path):
    path = write_wav(tmp_path / "c.flac", sine(300, 1.0))
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:200]))
    with pytest.raises(AudioError):
        load_audio(path)


def test_zero_length_audio(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, np.float32), 16_000)
    with pytest.raises(AudioError, match="zero-length"):
        load_audio(path)


def test_nan_samples(tmp_path):
    wave = sine(300, 0.1)
    wave[10] = np.nan
    path = write_wav(tmp_path / "nan.wav", wave, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(path)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="does not exist"):
        load_audio(tmp_path / "gone.wav")


def _mixed(tmp_path):
    good = [write_wav(tmp_path / f"g{i}.wav", sine(200 + i, 0.3)) for i in range(3)]
    bad1 = tmp_path / "b1.wav"
    bad1.write_bytes(b"")
    bad2 = tmp_path / "b2.wav"
    bad2.write_text("nope" * 50)
    return [good[0], bad1, good[1], bad2, good[2]]


def test_load_many_fails_fast_listing_every_bad_file(tmp_path):
    with pytest.raises(BadClipsError) as info:
        load_many(_mixed(tmp_path), seconds=0.3)
    err = info.value
    assert len(err.errors) == 2
    assert "b1.wav" in str(err) and "b2.wav" in str(err) and "2 bad audio file(s)" in str(err)


def test_load_many_skip_mode_keeps_the_good_and_counts_the_bad(tmp_path):
    paths = _mixed(tmp_path)
    seen = []
    loaded = load_many(paths, seconds=0.3, on_error="skip", progress=seen.append)
    assert loaded.waves.shape == (3, 4800)
    assert [p.name for p in loaded.paths] == ["g0.wav", "g1.wav", "g2.wav"]
    assert len(loaded.skipped) == 2 and len(seen) == 5
