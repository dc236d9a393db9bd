"""Several units of one machine type (DCASE 2020-22 style sections ``00..NN``), any synthetic family.

A plant runs several units of a machine type; each unit sounds like its type but has its own
timbre (mounting and housing resonances, a spectral tilt), so which unit a clip comes from is
learnable (the classic DCASE section-ID auxiliary task). Unit ``00`` is the family's machine as
it always was: a one-unit plant is the same tree, clip for clip, as before units existed.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from coopasd.errors import ConfigError

MAX_UNITS = 100  # sections are two digits


def unit_sections(first: str, units: int) -> tuple[str, ...]:
    """The section ids of ``units`` units starting at section ``first`` (``"00"``, 3 -> 00, 01, 02)."""
    if not re.fullmatch(r"\d{2}", first):
        raise ConfigError(f"section must be two digits, got {first!r}")
    if not 1 <= units <= MAX_UNITS - int(first):
        raise ConfigError(f"units must lie in [1, {MAX_UNITS - int(first)}] (two-digit sections), got {units}")
    return tuple(f"{int(first) + i:02d}" for i in range(units))


def unit_key(machine: str, section: str) -> str:
    """The name a unit's clip randomness is keyed by: the machine type itself for section 00."""
    return machine if section == "00" else f"{machine}/section_{section}"


def voice_unit(wave: np.ndarray, sample_rate: int, seed: int, machine: str, section: str) -> np.ndarray:
    """``wave`` ``(samples,)`` as unit ``section`` of ``machine`` sounds: three resonances of its own
    (+10..+18 dB, 0.6 octave wide, 250 Hz..6 kHz) and a tilt of +-3 dB per octave; unit 00 unchanged."""
    if section == "00":
        return wave
    rng = np.random.default_rng([seed, zlib.crc32(f"unit-voicing/{machine}/{section}".encode())])
    freqs = np.fft.rfftfreq(len(wave), 1 / sample_rate)
    octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)
    gain_db = rng.uniform(-3.0, 3.0) * octaves
    for _ in range(3):
        centre = np.log2(rng.uniform(250.0, 6000.0) / 1000.0)
        gain_db = gain_db + rng.uniform(10.0, 18.0) * np.exp(-0.5 * ((octaves - centre) / 0.25) ** 2)
    voiced = np.fft.irfft(np.fft.rfft(wave) * 10 ** (gain_db / 20), len(wave))
    return voiced * (np.sqrt(np.mean(wave**2)) / (np.sqrt(np.mean(voiced**2)) + 1e-12))
