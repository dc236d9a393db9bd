"""Audio loading: any file soundfile reads -> mono float32 at the target rate, fixed length.

Length rule (documented for users): a clip longer than ``seconds`` keeps its first
``seconds`` (deterministic, like a stream that starts recording); a shorter clip is tiled
(repeated end to start) up to ``seconds``, because zero padding would add silence that no
normal machine makes and bias every log-mel statistic. ``seconds=None`` (or 0) keeps each
clip's own length; :func:`load_many` then brings a set whose lengths differ to its most common
length (the dataset's own length) by the same rule, and logs how many clips it changed.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import soundfile as sf
import soxr

from coopasd.config.settings import SAMPLE_RATE
from coopasd.errors import AudioError, BadClipsError

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
_MAX_SAMPLES_PER_SECOND = 2 * 96_000  # with max_seconds: caps decoded memory (a small FLAC can unpack to GBs)
# Largest accepted sample magnitude: integer PCM reads as [-1, 1]; float files may exceed full scale a little
# (or store physical units), but beyond 1e6 (120 dB over full scale) no recording lies, and the log-mel
# power of float32 audio overflows to inf from about 1e12 on: such values are a broken file, not a sound.
MAX_ABS_SAMPLE = 1e6


def _check_wav_not_truncated(handle: BinaryIO, size: int, name: Path | str) -> None:
    """libsndfile silently reads a cut-off WAV; compare the data chunk's declared size to the bytes there are."""
    handle.seek(0)
    head = handle.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    offset = 12
    while offset + 8 <= size:
        handle.seek(offset)
        chunk_id, chunk_size = struct.unpack("<4sI", handle.read(8))
        if chunk_id == b"data":
            if chunk_size != 0xFFFFFFFF and offset + 8 + chunk_size > size:
                raise AudioError(
                    name,
                    f"truncated WAV: header declares {chunk_size} data bytes, file holds {size - offset - 8}",
                )
            return
        offset += 8 + chunk_size + (chunk_size & 1)


def _read_checked(
    source: Path | io.BytesIO, size: int, name: Path | str, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode a file or in-memory ``source`` of ``size`` bytes as float32 ``(samples, channels)`` and its rate.

    Every problem raises :class:`AudioError` naming ``name``. ``max_seconds`` rejects, from the
    header and before decoding, audio longer than that or holding more samples than that many
    seconds of stereo 96 kHz.
    """
    if size == 0:
        raise AudioError(name, "empty file (0 bytes)")
    if isinstance(source, Path):
        with open(source, "rb") as handle:
            _check_wav_not_truncated(handle, size, name)
    else:
        _check_wav_not_truncated(source, size, name)
        source.seek(0)
    try:
        with sf.SoundFile(source) as sound:
            if max_seconds is not None and sound.frames > max_seconds * sound.samplerate:
                raise AudioError(
                    name, f"audio lasts {sound.frames / sound.samplerate:.1f} s; at most {max_seconds:g} s accepted"
                )
            if max_seconds is not None and sound.frames * sound.channels > max_seconds * _MAX_SAMPLES_PER_SECOND:
                raise AudioError(
                    name,
                    f"{sound.channels} channels at {sound.samplerate} Hz: more samples than {max_seconds:g} s "
                    f"of stereo 96 kHz audio; accepted only up to that",
                )
            data, rate = sound.read(dtype="float32", always_2d=True), sound.samplerate
    except sf.LibsndfileError as err:
        raise AudioError(name, f"not a readable audio file ({err.error_string})") from err
    except (RuntimeError, ValueError, OSError) as err:
        raise AudioError(name, f"corrupt audio file ({err})") from err
    if data.shape[0] == 0:
        raise AudioError(name, "zero-length audio (no samples)")
    if not np.isfinite(data).all():
        raise AudioError(name, "audio contains NaN or infinite samples")
    peak = float(np.abs(data).max())
    if peak > MAX_ABS_SAMPLE:
        raise AudioError(
            name,
            f"samples reach {peak:.3g}: audio lies within about +-1 (digital full scale); beyond "
            f"+-{MAX_ABS_SAMPLE:g} it is a broken file, not a recording",
        )
    return data, int(rate)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Read a file as float32 ``(samples, channels)`` and its rate, with a clear error per problem."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file does not exist")
    return _read_checked(path, path.stat().st_size, path)


def fix_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Keep the first ``length`` samples, or tile a shorter clip up to ``length`` (see module doc)."""
    if wave.shape[0] >= length:
        return wave[:length]
    reps = -(-length // wave.shape[0])
    return np.tile(wave, reps)[:length]


def _to_clip(data: np.ndarray, rate: int, name: Path | str, sample_rate: int, seconds: float | None) -> np.ndarray:
    """Mono (channels averaged), resampled to ``sample_rate`` with soxr (HQ), length fixed."""
    wave = data.mean(axis=1)
    if rate != sample_rate:
        wave = soxr.resample(wave, rate, sample_rate, quality="HQ").astype(np.float32)
    if seconds:
        wave = fix_length(wave, int(round(seconds * sample_rate)))
    if float(np.abs(wave).max()) == 0.0:
        log.warning("%s: audio is pure digital silence", name)
    return np.ascontiguousarray(wave, dtype=np.float32)


def load_audio(path: Path, sample_rate: int = SAMPLE_RATE, seconds: float | None = None) -> np.ndarray:
    """Load one clip as mono float32 ``(samples,)`` at ``sample_rate``; channels are averaged,
    other rates are resampled with soxr (high quality), length fixed as the module doc says."""
    data, rate = read_audio(path)
    return _to_clip(data, rate, path, sample_rate, seconds)


def decode_audio(
    data: bytes,
    name: str,
    sample_rate: int = SAMPLE_RATE,
    seconds: float | None = None,
    max_seconds: float | None = None,
) -> np.ndarray:
    """:func:`load_audio` for an upload held in memory: the same checks, errors and clip rule.

    ``name`` (the upload's file name) is what errors name; ``max_seconds`` rejects audio longer
    than that, or with more samples than that many seconds of stereo 96 kHz (read from the header,
    before decoding), with an :class:`AudioError`.
    """
    wave, rate = _read_checked(io.BytesIO(data), len(data), name, max_seconds)
    return _to_clip(wave, rate, name, sample_rate, seconds)


@dataclass
class LoadedClips:
    """Waveforms of the clips that loaded, ``(n, samples)``, and the ones that did not."""

    waves: np.ndarray
    paths: list[Path]
    skipped: list[AudioError] = field(default_factory=list)


def load_many(
    paths: Sequence[Path],
    sample_rate: int = SAMPLE_RATE,
    seconds: float | None = None,
    on_error: OnError = "raise",
    progress: Callable[[int], None] | None = None,
) -> LoadedClips:
    """Load clips to one array. ``on_error="raise"`` reads every file first and then raises one
    :class:`BadClipsError` listing all bad files; ``"skip"`` drops them with a logged warning and
    keeps them in ``skipped`` for the run summary. ``seconds`` None or 0: the clips' own length."""
    waves: list[np.ndarray] = []
    kept: list[Path] = []
    errors: list[AudioError] = []
    for path in paths:
        try:
            waves.append(load_audio(path, sample_rate, seconds))
            kept.append(Path(path))
        except AudioError as err:
            errors.append(err)
        if progress:
            progress(1)
    if errors and on_error == "raise":
        raise BadClipsError(errors)
    for err in errors:
        log.warning("skipping bad clip %s", err)
    if waves and not seconds:
        waves = _to_common_length(waves, kept)
    length = len(waves[0]) if waves else int(round((seconds or 0) * sample_rate))
    array = np.stack(waves) if waves else np.zeros((0, length), np.float32)
    return LoadedClips(array, kept, errors)


def _to_common_length(waves: list[np.ndarray], paths: Sequence[Path]) -> list[np.ndarray]:
    """Clips of one set at their most common length (the dataset's own length), by the module's rule."""
    lengths = [len(w) for w in waves]
    common = max(set(lengths), key=lambda n: (lengths.count(n), n))
    changed = [p for p, n in zip(paths, lengths, strict=True) if n != common]
    if changed:
        log.warning(
            "%d of %d clips differ from the set's common length (%d samples), e.g. %s: cropped or tiled to it",
            len(changed),
            len(waves),
            common,
            changed[0],
        )
    return [fix_length(w, common) if len(w) != common else w for w in waves]
