"""The unseen plant: a second, separately designed synthetic plant family in the DCASE 2023 T2 layout.

No design choice of coopasd is tuned on it; results on it show how far choices made on
:mod:`coopasd.data.synth` transfer. Its six machine types, their physics, their faults and
the recording chain are its own:

- machines: a two-cylinder reciprocating compressor (firing pulsation, valve clicks), a belt
  conveyor (seam impacts over idlers, roller rumble, drive whine), an induction motor (magnetic
  hum, rotor-slot harmonics, cooling fan), a hydraulic press (die impacts, pump ripple, flow
  hiss), a centrifugal blower (blade-pass tones, turbulence) and a drill (cutting impulses
  ringing workpiece modes);
- recording: the dry machine is convolved with a room impulse response (direct path plus an
  exponentially decaying noise tail of random RT60), so distance sets the direct-to-reverberant
  ratio and the level against the background; a random microphone EQ (biquad shelves and
  peaks) colours everything; background machinery and transient events (door slams, forklift
  beeps, dropped parts, air blow-off) are mixed at a random SNR; the level is set by a preamp
  (source) or an AGC with soft clipping (target).

The target domain shifts one operating attribute to a value the source never has *and*
records with another microphone in another place of the hall. Every clip's randomness comes
from ``(seed, machine, split, domain, label, index)``, so any single clip can be re-rendered.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
from scipy import signal

from coopasd.data.synth import SynthSummary, add_counts, clip_plan, write_machine_tree
from coopasd.data.units import unit_key, unit_sections, voice_unit
from coopasd.errors import ConfigError

log = logging.getLogger(__name__)

Attrs = dict[str, str]
AttrOptions = tuple[tuple[str, tuple[str, ...]], ...]
SPEED_OF_SOUND = 343.0  # m/s
CRITICAL_DISTANCE_M = 1.2  # distance at which direct and reverberant energy are equal


@dataclass(frozen=True)
class UnseenPlantConfig:
    """What to generate (same meaning as :class:`coopasd.data.synth.SynthConfig`)."""

    machines: tuple[str, ...] = ("compressor", "conveyor", "motor", "press", "blower", "drill")  # machine types
    seed: int = 0  # base seed of every clip
    seconds: float = 2.0  # clip length
    sample_rate: int = 16_000  # Hz
    difficulty: float = 0.5  # 0 = loud faults ... 1 = barely audible
    train_source: int = 90  # normal source-domain training clips per machine
    train_target: int = 10  # normal target-domain training clips per machine
    test_per_domain: int = 100  # test clips per domain, half normal, half anomalous
    hide_labels: bool = False  # eval form: test names section_00_NNNN.wav + ground-truth csvs
    section: str = "00"  # DCASE section id (of the first unit)
    units: int = 1  # units per machine type: sections section..section+units-1, each its own timbre
    attributes: bool = True  # False: clips name no attributes (DCASE 2024 first-shot "noAttribute")

    def __post_init__(self) -> None:
        unknown = [m for m in self.machines if m not in UNSEEN_MACHINES]
        if unknown or not self.machines:
            raise ConfigError(
                f"unknown unseen-plant machine type(s) {unknown}; available: {', '.join(UNSEEN_MACHINES)}"
            )
        if not self.seconds > 0:
            raise ConfigError(f"seconds must be > 0, got {self.seconds}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ConfigError(f"difficulty must lie in [0, 1], got {self.difficulty}")
        if self.sample_rate < 16_000:
            raise ConfigError(f"sample_rate must be at least 16000 Hz (faults reach 7 kHz), got {self.sample_rate}")
        for name in ("train_source", "train_target"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.test_per_domain < 2:
            raise ConfigError(f"test_per_domain must be >= 2 (one normal, one anomalous), got {self.test_per_domain}")
        if not re.fullmatch(r"\d{2}", self.section):
            raise ConfigError(f"section must be two digits, got {self.section!r}")
        unit_sections(self.section, self.units)


@dataclass(frozen=True)
class Take:
    """What a machine model sees for one clip: attributes, randomness, length and the fault."""

    attrs: Attrs
    rng: np.random.Generator
    n: int  # samples to render
    sr: int  # Hz
    fault: str | None
    severity: float  # fault amplitude relative to the machine (linear)

    @property
    def t(self) -> np.ndarray:
        return np.arange(self.n) / self.sr

    def num(self, key: str) -> float:
        return float(self.attrs[key])


# ---------------------------------------------------------------- signal primitives
def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))) + 1e-12)


def _band(k: Take, lo: float, hi: float, order: int = 3, length: int | None = None) -> np.ndarray:
    """Unit-RMS white noise through a Butterworth band-pass [lo, hi] Hz (``length`` samples, default the clip)."""
    hi = min(hi, 0.45 * k.sr)
    sos = signal.butter(order, [lo, hi], btype="bandpass", fs=k.sr, output="sos")
    x = signal.sosfilt(sos, k.rng.standard_normal(k.n if length is None else length))
    return x / _rms(x)


def _wander(k: Take, rel: float, cutoff_hz: float = 1.0) -> np.ndarray:
    """A slowly wandering factor around 1 (speed or load fluctuation), std ``rel``."""
    drive = k.rng.standard_normal(k.n // 64 + 8)
    b, a = signal.butter(1, min(0.9, cutoff_hz * 64 * 2 / k.sr))
    slow = signal.lfilter(b, a, drive)
    slow = (slow - slow.mean()) / (slow.std() + 1e-12)
    return 1.0 + rel * np.interp(np.arange(k.n) / 64, np.arange(len(slow)), slow)


def _tones(k: Take, freq: np.ndarray | float, amps: dict[float, float]) -> np.ndarray:
    """Partials at multiples ``m`` of an instantaneous frequency ``freq`` (Hz), amplitude per multiple."""
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(freq, (k.n,))) / k.sr
    top = float(np.max(freq))
    out = np.zeros(k.n)
    for m, a in amps.items():
        if m * top < 0.47 * k.sr:
            out += a * np.sin(m * phase + k.rng.uniform(0, 2 * np.pi))
    return out


def _modes(k: Take, freqs: tuple[float, ...], decays_s: tuple[float, ...], gains: tuple[float, ...]) -> np.ndarray:
    """Impulse response of a few damped structural modes (one impact's ringing)."""
    length = int(k.sr * 5 * max(decays_s)) + 1
    tau = np.arange(length) / k.sr
    out = np.zeros(length)
    for f, d, g in zip(freqs, decays_s, gains, strict=True):
        out += g * np.exp(-tau / d) * np.sin(2 * np.pi * f * tau)
    return out


def _strike(k: Take, times: np.ndarray, kernel: np.ndarray, gains: np.ndarray | None = None) -> np.ndarray:
    """Impacts at ``times`` (s), each ringing ``kernel``; ``gains`` scale each impact."""
    impulses = np.zeros(k.n)
    idx = np.round(np.asarray(times) * k.sr).astype(int)
    g = np.ones(len(idx)) if gains is None else np.asarray(gains, dtype=float)
    keep = (idx >= 0) & (idx < k.n)
    np.add.at(impulses, idx[keep], g[keep])
    return signal.fftconvolve(impulses, kernel)[: k.n]


def _every(k: Take, rate_hz: float, jitter: float = 0.0) -> np.ndarray:
    """Event times of a process at ``rate_hz`` with a random start and relative timing jitter."""
    period = 1.0 / rate_hz
    times = np.arange(k.rng.uniform(0, period), k.n / k.sr, period)
    return times + k.rng.normal(0, jitter * period, len(times))


def _crossings(cycle: np.ndarray, at: float) -> np.ndarray:
    """Sample indices where a phase in [0, 1) passes ``at``."""
    return np.flatnonzero(np.diff(np.floor(cycle - at)) > 0) + 1


def _gate(cycle: np.ndarray, start: float, stop: float, smooth: int = 80) -> np.ndarray:
    """1 while a phase in [0, 1) lies in [start, stop), with soft edges of ``smooth`` samples."""
    frac = cycle % 1.0
    raw = ((frac >= start) & (frac < stop)).astype(float)
    return np.convolve(raw, np.hanning(smooth) / np.hanning(smooth).sum(), mode="same")


def _with_fault(k: Take, x: np.ndarray, fault: np.ndarray) -> np.ndarray:
    """The machine plus a fault component at ``k.severity`` times the machine's level."""
    return x + k.severity * _rms(x) / _rms(fault) * fault


# ---------------------------------------------------------------- machine models
def _compressor(k: Take) -> np.ndarray:
    """Two single-acting cylinders 180 degrees apart: pulsation harmonics, valve clicks, intake hiss."""
    f_crank = k.num("rpm") / 60.0 * _wander(k, 0.006, 0.7)
    bar = k.num("bar")
    crank = np.cumsum(f_crank) / k.sr + k.rng.uniform()
    open_at = 0.16 + 0.015 * bar  # the discharge valve opens later against a higher line pressure
    discharge = _modes(k, (3150.0, 5200.0), (0.0012, 0.0007), (1.0, 0.5))
    suction = _modes(k, (2250.0, 4050.0), (0.0016, 0.0009), (0.6, 0.3))
    pipe = _modes(k, (145.0, 430.0, 910.0), (0.03, 0.015, 0.006), (1.0, 0.5, 0.25))
    depth = min(1.0, 3.0 * k.severity) if k.fault == "misfire" else 0.0
    x = np.zeros(k.n)
    blow_by = np.zeros(k.n)
    for cyl, offset in enumerate((0.0, 0.5)):
        angle = crank + offset
        revs = np.floor(angle).astype(int)
        first = int(revs[0])
        rev_gain = np.ones(int(revs[-1]) - first + 2)
        if depth and cyl == 1:
            missed = k.rng.uniform(size=len(rev_gain)) < 0.55
            missed[k.rng.integers(len(missed))] = True
            rev_gain[missed] = 1.0 - depth
            blow_by += _gate(angle, 0.0, 0.45, 200) * missed[revs - first]
        gain = rev_gain[revs - first]
        pressure = np.where(angle % 1.0 < 0.4, np.sin(np.pi * (angle % 1.0) / 0.4) ** 3, 0.0) * (bar / 8.0)
        x += 0.01 * np.gradient(pressure * gain) * k.sr / np.mean(f_crank)  # radiated pulsation ~ d(pressure)/dt
        peak, opens, sucks = _crossings(angle, 0.2), _crossings(angle, open_at), _crossings(angle, 0.62)
        x += 0.8 * _strike(k, peak / k.sr, pipe, gain[peak])
        x += 1.4 * (bar / 8.0) * _strike(k, opens / k.sr, discharge, gain[opens] * k.rng.uniform(0.8, 1.2, len(opens)))
        x += 0.9 * _strike(k, sucks / k.sr, suction, k.rng.uniform(0.8, 1.2, len(sucks)))
        x += 0.12 * _band(k, 700, 3500) * _gate(angle, 0.55, 0.95, 300)
    x += 0.15 * _tones(k, 100.0, {1: 1.0, 2: 0.3}) + 0.03 * _band(k, 40, 7000)
    if k.fault == "misfire":
        return x + depth * 0.8 * _rms(x) * blow_by * _band(k, 1500, 4500)
    if k.fault == "valve_flutter":
        opens = np.concatenate([_crossings(crank + o, open_at) for o in (0.0, 0.5)]) / k.sr
        rate = k.rng.uniform(280, 420)
        times = np.concatenate([opens + j / rate for j in range(1, 6)])
        fault = _strike(k, times, _modes(k, (3600.0, 6100.0), (0.0008, 0.0005), (1.0, 0.6)))
    elif k.fault == "piston_slap":
        tdc = np.concatenate([_crossings(crank + o, 0.42) for o in (0.0, 0.5)]) / k.sr
        fault = _strike(k, tdc, _modes(k, (720.0, 1350.0), (0.006, 0.004), (1.0, 0.6)))
    else:
        return x
    return _with_fault(k, x, fault)


def _conveyor(k: Take) -> np.ndarray:
    """Belt over idlers: splice impacts at each idler, roller rumble, drive gear whine."""
    speed = k.num("mps") * _wander(k, 0.01, 0.5)
    heavy = k.attrs["load"] == "heavy"
    v = float(np.mean(speed))
    f_idler = speed / (np.pi * 0.108)  # 108 mm idler rollers
    roll = np.cumsum(f_idler) / k.sr
    rumble = _band(k, 40, 450) * (1 + 0.35 * np.sin(2 * np.pi * roll)) * (1.3 if heavy else 0.7)
    rumble += 0.25 * _band(k, 1800, 5000) * v
    drive = _tones(k, 410.0 * speed, {1: 0.35, 2: 0.15, 3: 0.06})
    seams = _every(k, v / 0.6, 0.03)
    thump = _modes(k, (95.0, 310.0, 1250.0), (0.025, 0.012, 0.004), (1.0, 0.6, 0.25))
    x = rumble + drive + (3.0 if heavy else 2.2) * _strike(k, seams, thump, k.rng.uniform(0.8, 1.2, len(seams)))
    if k.fault == "torn_seam":
        flaps = np.concatenate([seams + k.rng.uniform(0.006, 0.016) * j for j in range(1, 4)])
        fault = _strike(k, flaps, _modes(k, (2200.0, 3900.0), (0.002, 0.0012), (1.0, 0.7)))
    elif k.fault == "seized_roller":
        centre = k.rng.uniform(1500, 2500)
        stick = np.clip(np.sin(2 * np.pi * np.cumsum(f_idler * 3) / k.sr), 0, None)
        fault = _band(k, centre - 50, centre + 50, 2) * (0.3 + stick)
    elif k.fault == "mistracking":
        scrape = np.abs(_band(k, 0.5, 6.0, 1))
        fault = _band(k, 3500, 7200) * scrape
    else:
        return x
    return _with_fault(k, x, fault)


def _motor(k: Take) -> np.ndarray:
    """Induction motor on 50 Hz mains: magnetostrictive hum, rotor-slot harmonics, fan, bearings."""
    load = k.num("load") / 100.0
    poles = int(k.attrs["poles"])
    line = 50.0 * (1 + 0.0005 * k.rng.standard_normal())
    slip = 0.008 + 0.035 * load
    f_rot = 2 * line / poles * (1 - slip) * _wander(k, 0.0015, 0.5)
    bars = 28
    hum = _tones(k, 2 * line, {1: 1.0, 2: 0.35, 3: 0.25 + 0.4 * load, 4: 0.12, 6: 0.08})
    slot = sum(_tones(k, bars * f_rot + s * 2 * line, {1: 0.15 + 0.35 * load}) for s in (-1, 1))
    fan = _band(k, 250, 5000, 2) * 0.6 * (np.mean(f_rot) / 50.0) ** 2 + _tones(k, 9 * f_rot, {1: 0.25, 2: 0.08})
    bearing = 0.08 * _band(k, 3000, 7000) * (1 + 0.2 * np.sin(2 * np.pi * np.cumsum(f_rot) / k.sr))
    x = hum + slot + fan + bearing
    if k.fault == "broken_bar":
        beat = np.sin(2 * np.pi * 2 * slip * line * k.t + k.rng.uniform(0, 6.3))
        fault = (hum + 2 * slot) * beat + _tones(k, f_rot * (1 - 2 * slip), {1: 0.6, 2: 0.3})
    elif k.fault == "eccentricity":
        fault = _tones(k, f_rot, {1: 0.6, 3: 0.4, 5: 0.3}) + sum(
            _tones(k, bars * f_rot + s * f_rot, {1: 1.0}) for s in (-3, -2, -1, 1, 2, 3)
        )
    elif k.fault == "winding_short":
        centre = k.rng.uniform(1500, 2400)
        fault = _tones(k, 2 * line, {m: float(np.exp(-(((m * 100 - centre) / 500) ** 2))) for m in range(6, 40)})
    else:
        return x
    return _with_fault(k, x, fault)


def _press(k: Take) -> np.ndarray:
    """Hydraulic press: die impact per stroke, vane-pump ripple, flow hiss, valve shift on return."""
    spm = k.num("spm") * (1 + 0.02 * k.rng.uniform(-1, 1))
    force = (k.num("ton") / 160.0) ** 0.7
    cycle = np.arange(k.n) / k.sr * spm / 60.0 + k.rng.uniform()
    pressing = _gate(cycle, 0.3, 0.55, 400)
    f_pump = 1450 / 60.0 * 10 * _wander(k, 0.003)
    pump = _tones(k, f_pump, {1: 0.5, 2: 0.25, 3: 0.12}) * (0.6 + 0.6 * pressing)
    hiss = _band(k, 1500, 6000) * (0.08 + 0.35 * pressing)
    impact = _modes(k, (180.0, 620.0, 1450.0, 2900.0), (0.06, 0.03, 0.015, 0.008), (1.0, 0.7, 0.45, 0.25))
    hits = _crossings(cycle, 0.3) / k.sr
    shifts = _crossings(cycle, 0.55) / k.sr
    solenoid = _modes(k, (4200.0,), (0.001,), (1.0,))
    x = pump + hiss + 6.0 * force * _strike(k, hits, impact, k.rng.uniform(0.85, 1.15, len(hits)))
    x += 0.8 * _strike(k, shifts, solenoid) + 0.5 * _band(k, 500, 4000) * _gate(cycle, 0.55, 0.58, 100)
    if k.fault == "pressure_loss":
        fault = _band(k, 700, 2500) * (0.5 + pressing) + _tones(k, f_pump * 0.5, {1: 0.6, 3: 0.3})
    elif k.fault == "die_crack":
        crack = _modes(k, (4700.0, 6300.0), (0.025, 0.012), (1.0, 0.5))
        fault = _strike(k, np.concatenate([hits, hits + k.rng.uniform(0.015, 0.03)]), crack)
    elif k.fault == "relief_chatter":
        times = _every(k, k.rng.uniform(90, 130), 0.05)
        on = pressing[np.clip((times * k.sr).astype(int), 0, k.n - 1)] > 0.5
        fault = _strike(k, times[on], _modes(k, (2600.0,), (0.0015,), (1.0,))) + 0.1 * _band(k, 2000, 3200)
    else:
        return x
    return _with_fault(k, x, fault)


def _blower(k: Take) -> np.ndarray:
    """Centrifugal blower, 12 blades: blade-pass tones over broadband turbulence, damper throttling."""
    f_rot = k.num("rpm") / 60.0 * _wander(k, 0.004)
    throttled = k.attrs["damper"] == "half"
    level = (float(np.mean(f_rot)) / 50.0) ** 1.25
    tonal = _tones(k, 12 * f_rot, {1: 1.0, 2: 0.4, 3: 0.15}) * (0.9 if throttled else 0.5)
    turbulence = _band(k, 60, 600) + 0.5 * _band(k, 600, 2500) + 0.2 * _band(k, 2500, 7000)
    if throttled:
        turbulence += 0.45 * _band(k, 1200, 3500)
    x = tonal + level * turbulence + _tones(k, 100.0, {1: 0.2, 2: 0.08})
    if k.fault == "rubbing":
        touch = _crossings(np.cumsum(f_rot) / k.sr + k.rng.uniform(), 0.5) / k.sr
        scrape = _band(k, 3000, 7000, length=int(0.004 * k.sr)) * np.hanning(int(0.004 * k.sr))
        fault = _strike(k, touch, scrape, k.rng.uniform(0.5, 1.0, len(touch)))
    elif k.fault == "surge":
        pulse = np.sin(np.pi * k.rng.uniform(1.2, 3.0) * k.t + k.rng.uniform(0, 6.3)) ** 4
        fault = x * (pulse - pulse.mean()) / _rms(x) + 0.7 * _band(k, 20, 120) * pulse  # flow breaks down and returns
    elif k.fault == "fouling":
        deposits = _tones(k, f_rot, {1: 1.0, 2: 0.5, 3: 0.25})  # uneven deposits unbalance the rotor
        fault = deposits + sum(_tones(k, 12 * f_rot + s * f_rot, {1: 0.5}) for s in (-1, 1)) + 0.6 * _band(k, 250, 700)
    else:
        return x
    return _with_fault(k, x, fault)


_DRILL_MODES: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = MappingProxyType(
    {  # workpiece modes (Hz) and their decay times (s): steel rings longer than aluminium
        "steel": ((2150.0, 3420.0, 5630.0), (0.025, 0.015, 0.008)),
        "alu": ((1620.0, 2710.0, 4350.0), (0.01, 0.006, 0.004)),
    }
)


def _drill(k: Take) -> np.ndarray:
    """Two-flute drill: cutting impulses ringing workpiece modes, pecking cycle, spindle gear whine, chips."""
    f_rot = k.num("rpm") / 60.0 * _wander(k, 0.01, 2.0)
    freqs, decays = _DRILL_MODES[k.attrs["mat"]]
    ring = _modes(k, freqs, decays, (1.0, 0.7, 0.4))
    peck = np.arange(k.n) / k.sr / k.rng.uniform(0.75, 0.95) + k.rng.uniform()
    cutting = _gate(peck, 0.0, 0.82, 400)
    spindle = np.cumsum(f_rot) / k.sr
    flutes = np.concatenate([_crossings(spindle, 0.0), _crossings(spindle, 0.5)])
    bite = cutting[flutes] * k.rng.uniform(0.85, 1.15, len(flutes))
    x = 1.5 * _strike(k, flutes / k.sr, ring, bite) + 0.25 * _band(k, 2500, 7500) * cutting
    x += _tones(k, 17 * f_rot, {1: 0.3, 2: 0.12}) + 0.05 * _band(k, 40, 2000)
    if k.fault == "chipped_bit":  # the chipped flute bites unevenly and kicks the bit sideways once a turn
        chipped = _crossings(spindle, 0.0)
        kick = _modes(k, (380.0, 760.0, freqs[2] * 1.18), (0.012, 0.008, 0.004), (1.0, 0.5, 0.4))
        fault = _strike(k, chipped / k.sr, kick, cutting[chipped])
    elif k.fault == "chatter":
        growth = 0.4 + 0.6 * np.clip(np.sin(np.pi * (peck % 1.0) / 0.82), 0, None)
        fault = _tones(k, k.rng.uniform(900, 1300) * _wander(k, 0.004), {1: 1.0, 2: 0.3}) * cutting * growth
    elif k.fault == "dull_bit":
        fault = (_band(k, 4500, 7000) + _tones(k, k.rng.uniform(2900, 3300) * _wander(k, 0.01), {1: 0.6})) * cutting
    else:
        return x
    return _with_fault(k, x, fault)


@dataclass(frozen=True)
class UnseenMachine:
    """One machine type: operating attributes per domain, its physical model and its fault kinds."""

    source_attrs: AttrOptions  # (key, values) pairs; names carry them in this order
    target_attrs: AttrOptions  # one attribute shifted to a value the source never has
    faults: tuple[str, ...]
    model: Callable[[Take], np.ndarray]
    fault_gain: float = 1.0  # how audible this machine's faults are at equal severity


UNSEEN_MACHINES: Mapping[str, UnseenMachine] = MappingProxyType(
    {
        "compressor": UnseenMachine(
            (("rpm", ("600", "900")), ("bar", ("6", "8"))),
            (("rpm", ("1200",)), ("bar", ("6", "8"))),
            ("misfire", "valve_flutter", "piston_slap"),
            _compressor,
        ),
        "conveyor": UnseenMachine(
            (("mps", ("0.8", "1.2")), ("load", ("light", "heavy"))),
            (("mps", ("1.8",)), ("load", ("light", "heavy"))),
            ("torn_seam", "seized_roller", "mistracking"),
            _conveyor,
            fault_gain=0.8,
        ),
        "motor": UnseenMachine(
            (("load", ("25", "50")), ("poles", ("2", "4"))),
            (("load", ("100",)), ("poles", ("2", "4"))),
            ("broken_bar", "eccentricity", "winding_short"),
            _motor,
            fault_gain=1.4,
        ),
        "press": UnseenMachine(
            (("spm", ("60", "80")), ("ton", ("80", "160"))),
            (("spm", ("120",)), ("ton", ("80", "160"))),
            ("pressure_loss", "die_crack", "relief_chatter"),
            _press,
            fault_gain=0.8,
        ),
        "blower": UnseenMachine(
            (("rpm", ("2400", "3000")), ("damper", ("open", "half"))),
            (("rpm", ("3900",)), ("damper", ("open", "half"))),
            ("rubbing", "surge", "fouling"),
            _blower,
            fault_gain=1.4,
        ),
        "drill": UnseenMachine(
            (("rpm", ("800", "1200")), ("mat", ("steel", "alu"))),
            (("rpm", ("2000",)), ("mat", ("steel", "alu"))),
            ("chipped_bit", "chatter", "dull_bit"),
            _drill,
            fault_gain=1.3,
        ),
    }
)


# ---------------------------------------------------------------- recording chain
@dataclass(frozen=True)
class RecordingSetup:
    """Where and with what one domain is recorded; every range is drawn anew per clip."""

    distance_m: tuple[float, float]  # microphone to machine
    rt60_s: tuple[float, float]  # reverberation time of the hall at that spot
    eq: tuple[tuple[str, float, float, float, float], ...]  # microphone: (peak|lowshelf|highshelf, Hz, dB lo, hi, Q)
    snr_db: tuple[float, float]  # machine at 1 m against the background
    bed: str  # background: "hall" (HVAC, a distant press) or "workshop" (forklift engine, grinder)
    events_per_s: float  # transient events: door slam, forklift beep, dropped part, air blow-off
    event_db: tuple[float, float]  # level of one event against the machine at 1 m
    agc: bool  # automatic gain control with soft clipping instead of a fixed preamp


RECORDING_SETUPS: Mapping[str, RecordingSetup] = MappingProxyType(
    {
        "source": RecordingSetup(  # a close, nearly flat microphone in a quiet hall
            distance_m=(0.5, 1.5),
            rt60_s=(0.25, 0.5),
            eq=(
                ("lowshelf", 250.0, -2.0, 2.0, 0.7),
                ("peak", 3000.0, 0.0, 3.0, 1.0),
                ("highshelf", 6000.0, -3.0, 0.0, 0.7),
            ),
            snr_db=(14.0, 24.0),
            bed="hall",
            events_per_s=0.2,
            event_db=(-12.0, 0.0),
            agc=False,
        ),
        "target": RecordingSetup(  # a distant, bass-cut, presence-boosted microphone in a busy workshop
            distance_m=(1.5, 3.5),
            rt60_s=(0.5, 1.1),
            eq=(
                ("lowshelf", 180.0, -10.0, -2.0, 0.7),
                ("peak", 5000.0, 2.0, 9.0, 1.5),
                ("peak", 900.0, -6.0, 2.0, 2.0),
            ),
            snr_db=(8.0, 18.0),
            bed="workshop",
            events_per_s=0.3,
            event_db=(-8.0, 2.0),
            agc=True,
        ),
    }
)


def _room_response(rng: np.random.Generator, sr: int, distance: float, rt60: float) -> np.ndarray:
    """Direct path (delayed, 1/r) plus an exponentially decaying, wall-filtered noise tail of ``rt60``."""
    delay = int(sr * distance / SPEED_OF_SOUND)
    length = int(sr * min(1.5, 1.1 * rt60))
    tau = np.arange(length) / sr
    tail = rng.standard_normal(length) * np.exp(-6.91 * tau / rt60)
    pole = np.exp(-2 * np.pi * rng.uniform(2500, 6000) / sr)  # walls absorb the highs
    tail = signal.lfilter([1 - pole], [1, -pole], tail)
    tail[: int(0.003 * sr)] = 0.0  # first reflections arrive a few ms after the direct sound
    tail *= (1.0 / CRITICAL_DISTANCE_M) / (np.sqrt(np.sum(tail**2)) + 1e-12)
    ir = np.zeros(delay + length)
    ir[delay] = 1.0 / distance
    ir[delay:] += tail
    return ir


def _biquad(kind: str, f0: float, gain_db: float, q: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """RBJ audio-EQ-cookbook coefficients (b, a) of a peaking or shelving filter."""
    amp = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * f0 / sr
    cos, alpha = np.cos(w0), np.sin(w0) / (2 * q)
    if kind == "peak":
        b = [1 + alpha * amp, -2 * cos, 1 - alpha * amp]
        a = [1 + alpha / amp, -2 * cos, 1 - alpha / amp]
    else:
        sq = 2 * np.sqrt(amp) * alpha
        sign = 1 if kind == "lowshelf" else -1
        b = [
            amp * ((amp + 1) - sign * (amp - 1) * cos + sq),
            sign * 2 * amp * ((amp - 1) - sign * (amp + 1) * cos),
            amp * ((amp + 1) - sign * (amp - 1) * cos - sq),
        ]
        a = [
            (amp + 1) + sign * (amp - 1) * cos + sq,
            -sign * 2 * ((amp - 1) + sign * (amp + 1) * cos),
            (amp + 1) + sign * (amp - 1) * cos - sq,
        ]
    return np.asarray(b) / a[0], np.asarray(a) / a[0]


def _microphone(rng: np.random.Generator, x: np.ndarray, sr: int, setup: RecordingSetup) -> np.ndarray:
    """The domain's microphone: its EQ bands with per-unit spread in frequency and gain, plus self-noise."""
    for kind, f0, lo, hi, q in setup.eq:
        b, a = _biquad(kind, f0 * rng.uniform(0.85, 1.15), rng.uniform(lo, hi), q, sr)
        x = signal.lfilter(b, a, x)
    return x + 10 ** (-50 / 20) * rng.standard_normal(len(x))


def _background(k: Take, bed: str) -> np.ndarray:
    """Unit-RMS background of the hall: HVAC plus the machinery around the microphone."""
    hvac = signal.lfilter([1.0], [1.0, -0.97], k.rng.standard_normal(k.n))
    hvac = signal.sosfilt(signal.butter(2, 25, btype="highpass", fs=k.sr, output="sos"), hvac)
    parts = [hvac / _rms(hvac), 0.15 * _band(k, 2000, 7000)]
    if bed == "hall":
        thud = _modes(k, (55.0, 130.0), (0.09, 0.05), (1.0, 0.5))
        parts.append(0.8 * _strike(k, _every(k, k.rng.uniform(0.6, 1.2), 0.05), thud) / (_rms(thud) * 30))
        parts.append(0.3 * _tones(k, 50.0, {2: 1.0, 3: 0.5, 4: 0.3}))
    else:
        parts.append(
            0.6 * _tones(k, k.rng.uniform(26, 36) * _wander(k, 0.02), {1: 1.0, 2: 0.7, 3: 0.5, 4: 0.3, 6: 0.2})
        )
        centre = k.rng.uniform(5500, 6800)
        parts.append(0.35 * _band(k, centre - 80, centre + 80, 2) * (_wander(k, 0.5, 0.7) > 1.0))
    bed_wave = np.sum(parts, axis=0)
    return bed_wave / _rms(bed_wave)


def _events(k: Take, rate: float, level_db: tuple[float, float]) -> np.ndarray:
    """Transient events at ``rate`` per second, each at a random level in ``level_db`` (dB re. the machine)."""
    out = np.zeros(k.n)
    for _ in range(k.rng.poisson(rate * k.n / k.sr)):
        kind = int(k.rng.integers(4))
        if kind == 0:  # door slam: low thud and a short rattle
            event = _modes(k, (70.0, 140.0, 900.0), (0.08, 0.05, 0.01), (1.0, 0.6, 0.2))
        elif kind == 1:  # forklift reversing beep
            tau = np.arange(int(k.sr * 0.9)) / k.sr
            f = k.rng.uniform(1000, 1400)
            event = (np.sin(2 * np.pi * f * tau) + 0.3 * np.sin(6 * np.pi * f * tau)) * ((tau % 0.6) < 0.3)
        elif kind == 2:  # dropped metal part
            event = _modes(k, (1230.0, 3320.0, 6050.0), (0.3, 0.2, 0.1), (1.0, 0.6, 0.3))
        else:  # compressed-air blow-off
            length = int(k.sr * k.rng.uniform(0.2, 0.6))
            event = _band(k, 2000, 7000, length=length) * np.hanning(length)
        start = int(k.rng.uniform(-0.3, 1.0) * k.n)
        lo, hi = max(0, start), min(k.n, start + len(event))
        if hi > lo:
            out[lo:hi] += 10 ** (k.rng.uniform(*level_db) / 20) * event[lo - start : hi - start] / _rms(event)
    return out


def _level(rng: np.random.Generator, x: np.ndarray, sr: int, agc: bool) -> np.ndarray:
    """Preamp (fixed random gain, hard limit) or AGC (slow gain riding) with a soft-clipping stage."""
    if not agc:
        y = x * 10 ** (rng.uniform(-28, -20) / 20) / _rms(x)
        return np.clip(y, -0.99, 0.99)
    pole = np.exp(-1.0 / (0.15 * sr))
    power = signal.lfilter([1 - pole], [1, -pole], x**2) + 1e-12
    gain = np.clip((np.mean(power) / power) ** 0.3, 0.3, 3.0)
    y = x * gain * 10 ** (rng.uniform(-18, -12) / 20) / _rms(x)
    drive = rng.uniform(1.5, 3.0)
    return np.tanh(drive * y) / drive


# ---------------------------------------------------------------- one clip
def _clip_seeds(seed: int, machine: str, split: str, domain: str, label: str, index: int) -> list[np.random.Generator]:
    """Independent generators (choices, machine, recording) of one clip, from its identity alone."""
    key = zlib.crc32(f"unseen-plant/{machine}/{split}/{domain}/{label}".encode())
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, key, index]).spawn(3)]


def fault_severity(difficulty: float, rng: np.random.Generator) -> float:
    """Fault amplitude relative to the machine: -2 dB at difficulty 0, -22 dB at 1, +-6 dB per clip."""
    return float(10 ** ((-2.0 - 20.0 * difficulty + rng.uniform(-6.0, 6.0)) / 20))


def render_unseen_clip(
    cfg: UnseenPlantConfig, machine: str, split: str, domain: str, label: str, index: int
) -> tuple[np.ndarray, Attrs, str | None]:
    """One clip as recorded: waveform ``(samples,)`` float32 in [-1, 1], its attributes and fault kind."""
    spec, setup = UNSEEN_MACHINES[machine], RECORDING_SETUPS[domain]
    pick, sound, room = _clip_seeds(cfg.seed, unit_key(machine, cfg.section), split, domain, label, index)
    options = spec.source_attrs if domain == "source" else spec.target_attrs
    attrs = {key: str(pick.choice(values)) for key, values in options}
    fault = str(pick.choice(spec.faults)) if label == "anomaly" else None
    severity = fault_severity(cfg.difficulty, pick) * spec.fault_gain if fault else 0.0
    sr, n = cfg.sample_rate, max(1, int(round(cfg.seconds * cfg.sample_rate)))
    rt60 = room.uniform(*setup.rt60_s)
    ir = _room_response(room, sr, room.uniform(*setup.distance_m), rt60)
    pre_roll = len(ir)  # the room is in steady state when the clip starts
    dry = voice_unit(
        spec.model(Take(attrs, sound, n + pre_roll, sr, fault, severity)), sr, cfg.seed, machine, cfg.section
    )
    wet = signal.fftconvolve(dry / _rms(dry), ir)[pre_roll : pre_roll + n]
    env = Take({}, room, n, sr, None, 0.0)
    noise = _background(env, setup.bed) * 10 ** (-room.uniform(*setup.snr_db) / 20) + _events(
        env, setup.events_per_s, setup.event_db
    )
    heard = _microphone(room, wet + noise, sr, setup)
    return _level(room, heard, sr, setup.agc).astype(np.float32), attrs if cfg.attributes else {}, fault


# ---------------------------------------------------------------- writing a tree
def _plan(cfg: UnseenPlantConfig) -> list[tuple[str, str, str, int]]:
    return clip_plan(cfg.train_source, cfg.train_target, cfg.test_per_domain)


def unseen_clip_count(cfg: UnseenPlantConfig) -> int:
    """How many clips :func:`generate_unseen_plant` writes for ``cfg``."""
    return len(cfg.machines) * cfg.units * len(_plan(cfg))


def generate_unseen_plant(
    cfg: UnseenPlantConfig, out: Path, progress: Callable[[int], None] | None = None
) -> SynthSummary:
    """Write a complete DCASE 2023 T2 tree of the unseen plant under ``out`` (must be empty or absent)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: output directory is not empty; choose a new one")
    sections = unit_sections(cfg.section, cfg.units)
    counts = {
        machine: add_counts(_write_machine(replace(cfg, section=s), machine, out, progress) for s in sections)
        for machine in cfg.machines
    }
    manifest = {"generator": "coopasd.data.unseen_plant", "config": asdict(cfg), "counts": counts}
    (out / "unseen_plant.json").write_text(json.dumps(manifest, indent=2))
    log.debug("unseen plant written to %s: %s", out, counts)
    return SynthSummary(out, counts, {m: list(UNSEEN_MACHINES[m].faults) for m in cfg.machines})


def _write_machine(
    cfg: UnseenPlantConfig, machine: str, out: Path, progress: Callable[[int], None] | None
) -> dict[str, int]:
    plan = _plan(cfg)
    n_test = sum(1 for p in plan if p[0] == "test")
    unit = unit_key(machine, cfg.section)
    hidden = np.random.default_rng([cfg.seed, zlib.crc32(f"unseen-plant/{unit}/hidden-order".encode())])
    order = hidden.permutation(n_test) if cfg.hide_labels else None

    def render(split: str, domain: str, label: str, index: int) -> tuple[np.ndarray, dict[str, str]]:
        wave, attrs, _fault = render_unseen_clip(cfg, machine, split, domain, label, index)
        return wave, attrs

    return write_machine_tree(out, machine, cfg.section, plan, render, cfg.sample_rate, order, progress)


__all__ = [
    "RECORDING_SETUPS",
    "UNSEEN_MACHINES",
    "RecordingSetup",
    "Take",
    "UnseenMachine",
    "UnseenPlantConfig",
    "fault_severity",
    "generate_unseen_plant",
    "render_unseen_clip",
    "unseen_clip_count",
]
