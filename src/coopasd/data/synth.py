"""Deterministic synthetic factories in the DCASE 2023 Task 2 layout (the embedded default).

Each machine type has its own sound physics and two attributes that really change the
sound. The target domain uses attribute values (and a factory background) the source domain
never has. Training clips are normal only; test clips are half normal, half anomalous per
domain, with several anomaly kinds per machine whose strength follows ``difficulty`` and
varies clip to clip (some anomalies are nearly inaudible, as in real plants).

Every clip's randomness comes from ``(seed, machine, split, domain, label, index)``, so a
tree is reproducible and a machine's clips do not depend on which other machines are made.
"""

from __future__ import annotations

import csv
import json
import logging
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from coopasd.config.settings import SAMPLE_RATE
from coopasd.data.layout import GROUND_TRUTH_DOMAIN_DIR, GROUND_TRUTH_LABEL_DIR, ground_truth_paths
from coopasd.data.units import unit_key, unit_sections, voice_unit
from coopasd.errors import ConfigError

log = logging.getLogger(__name__)

Attrs = dict[str, str]
Render = Callable[["ClipContext"], np.ndarray]


@dataclass(frozen=True)
class SynthConfig:
    """What to generate."""

    machines: tuple[str, ...] = ("fan", "gearbox", "bearing", "valve", "slider")  # machine types
    seed: int = 0  # base seed of every clip
    seconds: float = 2.0  # clip length (DCASE uses 10.0)
    sample_rate: int = SAMPLE_RATE  # Hz
    train_source: int = 90  # normal source-domain training clips per machine (DCASE: 990)
    train_target: int = 10  # normal target-domain training clips per machine (DCASE: 10)
    test_per_domain: int = 100  # test clips per domain, half normal, half anomalous
    difficulty: float = 0.5  # 0 = loud anomalies ... 1 = barely audible
    hide_labels: bool = False  # eval form: test names section_00_NNNN.wav + ground-truth csvs
    section: str = "00"  # DCASE section id (of the first unit)
    units: int = 1  # units per machine type: sections section..section+units-1, each its own timbre
    attributes: bool = True  # False: clips name no attributes (DCASE 2024 first-shot "noAttribute")

    def __post_init__(self) -> None:
        unit_sections(self.section, self.units)
        unknown = [m for m in self.machines if m not in MACHINES]
        if unknown or not self.machines:
            raise ConfigError(f"unknown machine type(s) {unknown}; available: {', '.join(MACHINES)}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ConfigError(f"difficulty must lie in [0, 1], got {self.difficulty}")
        if self.seconds < 0.1:
            raise ConfigError(f"seconds must be at least 0.1, got {self.seconds}")
        if self.train_source < 2 or self.train_target < 1 or self.test_per_domain < 2:
            raise ConfigError("need >= 2 source train, >= 1 target train and >= 2 test clips per domain")


@dataclass
class ClipContext:
    """Everything one clip's renderer needs."""

    attrs: Attrs
    rng: np.random.Generator
    n: int
    sr: int
    anomaly: str | None
    strength: float  # anomaly amplitude relative to the machine's own level
    t: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.t = np.arange(self.n) / self.sr

    def jitter(self, value: float, rel: float = 0.02) -> float:
        return value * (1.0 + rel * self.rng.uniform(-1, 1))


# ---------------------------------------------------------------- signal building blocks
def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / _rms(x)


def shaped_noise(ctx: ClipContext, lo: float, hi: float, slope_db_oct: float = 0.0) -> np.ndarray:
    """Unit-RMS noise band-limited to [lo, hi] Hz with a spectral slope in dB per octave."""
    spec = np.fft.rfft(ctx.rng.standard_normal(ctx.n))
    freqs = np.fft.rfftfreq(ctx.n, 1 / ctx.sr)
    gain = ((freqs >= lo) & (freqs <= hi)).astype(float)
    gain *= (np.maximum(freqs, 1.0) / 1000.0) ** (slope_db_oct / 6.02)
    return _unit(np.fft.irfft(spec * gain, ctx.n))


def drifting_tones(ctx: ClipContext, f0: float, amps: list[float], wobble: float = 0.003) -> np.ndarray:
    """Harmonics of a slowly drifting fundamental (speed fluctuation), random phases."""
    drift = 1 + wobble * np.sin(2 * np.pi * ctx.rng.uniform(0.2, 0.8) * ctx.t + ctx.rng.uniform(0, 6.3))
    phase = 2 * np.pi * np.cumsum(f0 * drift) / ctx.sr
    out = np.zeros(ctx.n)
    for h, a in enumerate(amps, start=1):
        if h * f0 < ctx.sr / 2:
            out += a * ctx.jitter(1.0, 0.1) * np.sin(h * phase + ctx.rng.uniform(0, 2 * np.pi))
    return out


def damped_hits(ctx: ClipContext, times: np.ndarray, freq: float, decay_s: float, amps=None) -> np.ndarray:
    """Sum of damped sinusoids (impacts exciting a resonance) starting at ``times`` seconds."""
    out = np.zeros(ctx.n)
    length = min(ctx.n, int(decay_s * 6 * ctx.sr))
    tau = np.arange(length) / ctx.sr
    kernel = np.exp(-tau / decay_s) * np.sin(2 * np.pi * freq * tau)
    amps = np.ones(len(times)) if amps is None else np.asarray(amps)
    for t0, a in zip(times, amps, strict=True):
        i = int(t0 * ctx.sr)
        if 0 <= i < ctx.n:
            seg = kernel[: ctx.n - i]
            out[i : i + len(seg)] += a * seg
    return out


def periodic_times(ctx: ClipContext, rate_hz: float, jitter_rel: float = 0.02) -> np.ndarray:
    period = 1.0 / rate_hz
    start = ctx.rng.uniform(0, period)
    times = np.arange(start, ctx.n / ctx.sr, period)
    return times + ctx.rng.normal(0, jitter_rel * period, len(times))


def add_anomaly(ctx: ClipContext, normal: np.ndarray, anomaly: np.ndarray) -> np.ndarray:
    return normal + ctx.strength * _rms(normal) * _unit(anomaly)


# ---------------------------------------------------------------- machines
@dataclass(frozen=True)
class MachineSpec:
    """One machine type: attribute values per domain, a renderer and its anomaly kinds."""

    source_attrs: dict[str, tuple[str, ...]]
    target_attrs: dict[str, tuple[str, ...]]
    anomalies: tuple[str, ...]
    render: Render
    anomaly_gain: float = 1.0  # how audible this machine's anomalies are at equal strength


def _fan(ctx: ClipContext) -> np.ndarray:
    f_rot = ctx.jitter(float(ctx.attrs["spd"]) / 60.0)
    blades = int(ctx.attrs["blade"])
    bpf = blades * f_rot
    load = (f_rot / 22.0) ** 2
    flow = shaped_noise(ctx, 30, min(7000, 1800 * f_rot / 22), -3.0) * load
    tonal = drifting_tones(ctx, bpf, [0.5, 0.3, 0.18, 0.1, 0.06]) * 1.6
    x = flow + tonal
    if ctx.anomaly == "imbalance":
        a = drifting_tones(ctx, f_rot, [1.0, 0.3]) + x * 0.8 * np.sin(2 * np.pi * f_rot * ctx.t)
    elif ctx.anomaly == "blade_damage":
        a = sum(
            np.sin(2 * np.pi * (blades + d) * f_rot * ctx.t + ctx.rng.uniform(0, 6)) for d in (-1, 1, 2 * blades + 1)
        )
    elif ctx.anomaly == "clogging":
        a = shaped_noise(ctx, 700, 1600)
    else:
        return x
    return add_anomaly(ctx, x, a)


def _gearbox(ctx: ClipContext) -> np.ndarray:
    f_shaft = ctx.jitter(10.0 * float(ctx.attrs["volt"]))
    mesh = 23 * f_shaft
    load = float(ctx.attrs["wt"]) / 100.0
    carrier = drifting_tones(ctx, mesh, [1.0, 0.3 + 0.6 * load, 0.1 + 0.5 * load, 0.3 * load])
    modulation = 1 + 0.4 * load * np.sin(2 * np.pi * f_shaft * ctx.t + ctx.rng.uniform(0, 6))
    x = carrier * modulation + (0.2 + 0.4 * load) * shaped_noise(ctx, 50, 6000, -4.0)
    if ctx.anomaly == "broken_tooth":
        a = damped_hits(ctx, periodic_times(ctx, f_shaft, 0.005), 2600.0, 0.002)
    elif ctx.anomaly == "wear":
        a = carrier * np.sin(2 * np.pi * 2 * f_shaft * ctx.t) + drifting_tones(ctx, mesh * 2.5, [1.0])
    elif ctx.anomaly == "misalignment":
        a = drifting_tones(ctx, 2 * f_shaft, [1.0, 0.5, 0.3])
    else:
        return x
    return add_anomaly(ctx, x, a)


def _bearing(ctx: ClipContext) -> np.ndarray:
    f_shaft = ctx.jitter(float(ctx.attrs["vel"]) * 4.0)
    resonance = {"A": 2500.0, "B": 4200.0}[ctx.attrs["loc"]]
    speed = f_shaft / 40.0
    structure = shaped_noise(ctx, resonance * 0.7, resonance * 1.3) * 0.5 * speed
    structure += shaped_noise(ctx, 40, 1500 + 3000 * speed, -5.0)
    x = structure + 1.2 * drifting_tones(ctx, f_shaft, [1.0, 0.6, 0.4, 0.25])
    if ctx.anomaly == "outer_race":
        a = damped_hits(ctx, periodic_times(ctx, 3.57 * f_shaft, 0.01), resonance, 0.0015)
    elif ctx.anomaly == "inner_race":
        times = periodic_times(ctx, 5.43 * f_shaft, 0.01)
        amps = 1 + 0.8 * np.sin(2 * np.pi * f_shaft * times)
        a = damped_hits(ctx, times, resonance * 1.1, 0.001, amps)
    elif ctx.anomaly == "lubrication":
        a = shaped_noise(ctx, 5000, 7500)
    else:
        return x
    return add_anomaly(ctx, x, a)


_VALVE_PATTERNS = {"00": (0.50, 0.0), "01": (0.40, 0.12), "02": (0.30, 0.08)}


def _valve(ctx: ClipContext) -> np.ndarray:
    period, second = _VALVE_PATTERNS[ctx.attrs["pat"]]
    body = {"open": 1800.0, "closed": 1200.0}[ctx.attrs["panel"]]
    opens = periodic_times(ctx, 1.0 / period, 0.01)
    clicks = damped_hits(ctx, opens, body, 0.004) + 0.6 * damped_hits(ctx, opens, body * 1.7, 0.002)
    if second:
        clicks += 1.2 * damped_hits(ctx, opens + second, body * 1.3, 0.004)
    gate = np.zeros(ctx.n)
    duty = 0.3 + 0.5 * (second > 0)
    for t0 in opens:
        gate[max(0, int(t0 * ctx.sr)) : int((t0 + period * duty) * ctx.sr)] = 1.0
    hiss = shaped_noise(ctx, 1000, 4000) * (0.08 + 0.25 * gate)
    x = clicks + hiss + 0.05 * shaped_noise(ctx, 30, 8000, -6.0)
    if ctx.anomaly == "contamination":
        a = damped_hits(ctx, opens + 0.015, body * 2.3, 0.003)
    elif ctx.anomaly == "leak":
        a = shaped_noise(ctx, 2500, 6000) * (1 - gate)
    elif ctx.anomaly == "sticking":
        late = opens + ctx.rng.uniform(0.02, 0.06, len(opens))
        a = damped_hits(ctx, late, body * 0.8, 0.006)
    else:
        return x
    return add_anomaly(ctx, x, a)


def _slider(ctx: ClipContext) -> np.ndarray:
    vel = ctx.jitter(float(ctx.attrs["vel"]))
    accel = float(ctx.attrs["ac"])
    cycle = 150.0 / vel  # seconds per stroke
    phase = (ctx.t / cycle + ctx.rng.uniform(0, 1)) % 1.0
    moving = (phase < 0.8).astype(float)
    friction = shaped_noise(ctx, 300, 3000, -2.0) * moving * (vel / 500.0)
    whine = drifting_tones(ctx, 2.2 * vel, [0.3, 0.1]) * moving * (accel / 0.03)
    stops = ctx.t[np.flatnonzero(np.diff(moving) < 0)]
    impacts = damped_hits(ctx, stops, 600.0 + 8000.0 * accel, 0.01) * (accel / 0.03) ** 2 * 1.5
    x = friction + whine + impacts + 0.05 * shaped_noise(ctx, 30, 8000, -6.0)
    if ctx.anomaly == "rail_damage":
        starts = ctx.t[np.flatnonzero(np.diff(moving) > 0)]
        a = damped_hits(ctx, np.concatenate([stops, starts]) - 0.35 * cycle, 1500.0, 0.004)
    elif ctx.anomaly == "no_grease":
        a = drifting_tones(ctx, 2300.0, [1.0], wobble=0.02) * moving
    elif ctx.anomaly == "loose_belt":
        a = shaped_noise(ctx, 30, 90) * moving
    else:
        return x
    return add_anomaly(ctx, x, a)


def _pump(ctx: ClipContext) -> np.ndarray:
    f_rot = ctx.jitter(float(ctx.attrs["rpm"]) / 60.0)
    flow_level = {"low": 0.4, "high": 0.9}[ctx.attrs["flow"]]
    x = drifting_tones(ctx, 6 * f_rot, [0.6, 0.3, 0.15]) + 0.3 * drifting_tones(ctx, 100.0, [1.0, 0.3], 0.0005)
    x = x + flow_level * shaped_noise(ctx, 40, 3000, -4.0)
    if ctx.anomaly == "cavitation":
        times = np.sort(ctx.rng.uniform(0, ctx.n / ctx.sr, int(40 * ctx.n / ctx.sr)))
        a = damped_hits(ctx, times, 5500.0, 0.0005, ctx.rng.uniform(0.3, 1.0, len(times)))
    elif ctx.anomaly == "leak":
        a = shaped_noise(ctx, 4000, 7000)
    elif ctx.anomaly == "impeller":
        a = drifting_tones(ctx, f_rot, [1.0, 0.6, 0.4])
    else:
        return x
    return add_anomaly(ctx, x, a)


MACHINES: dict[str, MachineSpec] = {
    "fan": MachineSpec(
        {"spd": ("1200", "1400"), "blade": ("5", "7")},
        {"spd": ("1750",), "blade": ("5", "7")},
        ("imbalance", "blade_damage", "clogging"),
        _fan,
    ),
    "gearbox": MachineSpec(
        {"volt": ("1.0", "1.5"), "wt": ("30", "80")},
        {"volt": ("2.0",), "wt": ("30", "80")},
        ("broken_tooth", "wear", "misalignment"),
        _gearbox,
    ),
    "bearing": MachineSpec(
        {"vel": ("6", "10"), "loc": ("A", "B")},
        {"vel": ("14",), "loc": ("A", "B")},
        ("outer_race", "inner_race", "lubrication"),
        _bearing,
    ),
    "valve": MachineSpec(
        {"pat": ("00", "01"), "panel": ("open", "closed")},
        {"pat": ("02",), "panel": ("open", "closed")},
        ("contamination", "leak", "sticking"),
        _valve,
    ),
    "slider": MachineSpec(
        {"vel": ("300", "500"), "ac": ("0.03", "0.05")},
        {"vel": ("700",), "ac": ("0.03", "0.05")},
        ("rail_damage", "no_grease", "loose_belt"),
        _slider,
    ),
    "pump": MachineSpec(
        {"rpm": ("1450", "2900"), "flow": ("low", "high")},
        {"rpm": ("2200",), "flow": ("low", "high")},
        ("cavitation", "leak", "impeller"),
        _pump,
    ),
}

# Each domain is recorded in a different place of the plant: background colour and level.
_BACKGROUND = {"source": (-3.0, 0.08), "target": (-1.0, 0.14)}  # (slope dB/oct, level rel. to machine)


# ---------------------------------------------------------------- rendering one clip
def _clip_rng(seed: int, machine: str, split: str, domain: str, label: str, index: int) -> np.random.Generator:
    key = zlib.crc32(f"{machine}/{split}/{domain}/{label}".encode())
    return np.random.default_rng([seed, key, index])


def anomaly_strength(difficulty: float, rng: np.random.Generator) -> float:
    """Anomaly amplitude relative to the machine: -6 dB at difficulty 0, -24 dB at 1, +-6 dB per clip."""
    level_db = -6.0 - 18.0 * difficulty + rng.uniform(-6.0, 6.0)
    return float(10 ** (level_db / 20))


def render_clip(
    cfg: SynthConfig, machine: str, split: str, domain: str, label: str, index: int
) -> tuple[np.ndarray, Attrs, str | None]:
    """One clip of unit ``cfg.section``: waveform ``(samples,)`` float32 in [-1, 1], its attributes
    (none where ``cfg.attributes`` is off) and anomaly kind."""
    spec = MACHINES[machine]
    rng = _clip_rng(cfg.seed, unit_key(machine, cfg.section), split, domain, label, index)
    options = spec.source_attrs if domain == "source" else spec.target_attrs
    attrs = {k: str(rng.choice(v)) for k, v in options.items()}
    kind = str(rng.choice(spec.anomalies)) if label == "anomaly" else None
    strength = anomaly_strength(cfg.difficulty, rng) * spec.anomaly_gain if kind else 0.0
    n = int(round(cfg.seconds * cfg.sample_rate))
    ctx = ClipContext(attrs, rng, n, cfg.sample_rate, kind, strength)
    machine_sound = _unit(voice_unit(spec.render(ctx), cfg.sample_rate, cfg.seed, machine, cfg.section))
    slope, level = _BACKGROUND[domain]
    background = shaped_noise(ctx, 20, cfg.sample_rate / 2, slope) * level * ctx.jitter(1.0, 0.3)
    wave = (machine_sound + background) * 0.1 * 10 ** (rng.uniform(-2, 2) / 20)
    peak = float(np.abs(wave).max())
    if peak > 0.99:
        wave *= 0.99 / peak
    return wave.astype(np.float32), attrs if cfg.attributes else {}, kind


# ---------------------------------------------------------------- writing a tree
@dataclass
class SynthSummary:
    """What was written: clip counts per machine and split, and the anomaly kinds."""

    root: Path
    counts: dict[str, dict[str, int]]
    anomaly_kinds: dict[str, list[str]]


def clip_plan(train_source: int, train_target: int, test_per_domain: int) -> list[tuple[str, str, str, int]]:
    """(split, domain, label, index) of every clip of one machine, in DCASE numbering (half of each
    test domain anomalous); both plant families write their trees by it."""
    plan = [("train", "source", "normal", i) for i in range(train_source)]
    plan += [("train", "target", "normal", i) for i in range(train_target)]
    n_anom = test_per_domain // 2
    for domain in ("source", "target"):
        plan += [("test", domain, "normal", i) for i in range(test_per_domain - n_anom)]
        plan += [("test", domain, "anomaly", i) for i in range(n_anom)]
    return plan


def _plan(cfg: SynthConfig) -> list[tuple[str, str, str, int]]:
    return clip_plan(cfg.train_source, cfg.train_target, cfg.test_per_domain)


def generate(cfg: SynthConfig, out: Path, progress: Callable[[int], None] | None = None) -> SynthSummary:
    """Write a complete DCASE 2023 T2 tree for ``cfg`` under ``out`` (must be empty or absent)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: output directory is not empty; choose a new one")
    counts: dict[str, dict[str, int]] = {}
    for machine in cfg.machines:
        counts[machine] = add_counts(
            _write_machine(replace(cfg, section=s), machine, out, progress)
            for s in unit_sections(cfg.section, cfg.units)
        )
    manifest = {"generator": "coopasd.data.synth", "config": asdict(cfg), "counts": counts}
    (out / "synth.json").write_text(json.dumps(manifest, indent=2))
    kinds = {m: list(MACHINES[m].anomalies) for m in cfg.machines}
    return SynthSummary(out, counts, kinds)


ClipRenderer = Callable[[str, str, str, int], tuple[np.ndarray, dict[str, str]]]


def write_machine_tree(
    out: Path,
    machine: str,
    section: str,
    plan: list[tuple[str, str, str, int]],
    render: ClipRenderer,
    sample_rate: int,
    hidden_order: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Write one machine type's clips in the DCASE 2023 T2 layout (any synthetic family).

    ``plan`` lists (split, domain, label, index); ``render(split, domain, label, index)`` gives the
    wave and its attributes. Names carry domain, label and attributes, and ``attributes_<section>.csv``
    lists them; with ``hidden_order`` (one number per test clip) test clips get anonymized names and
    their labels and domains go to the ground-truth csvs instead (the eval form).
    """
    mdir = out / machine
    for split in ("train", "test"):
        (mdir / split).mkdir(parents=True, exist_ok=True)
    order = iter(hidden_order) if hidden_order is not None else None
    attr_rows: list[list[str]] = []
    truth: list[tuple[str, int, int]] = []
    for split, domain, label, index in plan:
        wave, attrs = render(split, domain, label, index)
        attr_part = "_".join(f"{k}_{v}" for k, v in attrs.items()) or "noAttribute"
        name = f"section_{section}_{domain}_{split}_{label}_{index:04d}_{attr_part}.wav"
        if split == "test" and order is not None:
            name = f"section_{section}_{int(next(order)):04d}.wav"
            truth.append((name, int(label == "anomaly"), int(domain == "target")))
        else:
            attr_rows.append([f"{machine}/{split}/{name}", *[x for kv in attrs.items() for x in kv]])
        sf.write(mdir / split / name, wave, sample_rate, subtype="PCM_16")
        if progress:
            progress(1)
    width = max(len(r) for r in attr_rows) - 1
    header = ["file_name"] + [f"d{i // 2 + 1}{'pv'[i % 2]}" for i in range(width)]
    with open(mdir / f"attributes_{section}.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *attr_rows])
    if truth:
        label_csv, domain_csv = ground_truth_paths(out, machine, section)
        for path, column in ((label_csv, 1), (domain_csv, 2)):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="") as handle:
                csv.writer(handle).writerows(sorted((row[0], row[column]) for row in truth))
    n_train = sum(1 for p in plan if p[0] == "train")
    return {"train": n_train, "test": len(plan) - n_train}


def add_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Clip counts of several units of one machine type, added up."""
    total: dict[str, int] = {}
    for c in counts:
        total = {k: total.get(k, 0) + v for k, v in c.items()}
    return total


def _write_machine(cfg: SynthConfig, machine: str, out: Path, progress) -> dict[str, int]:
    plan = _plan(cfg)
    hidden_order = _clip_rng(cfg.seed, unit_key(machine, cfg.section), "test", "order", "hidden", 0).permutation(
        sum(1 for p in plan if p[0] == "test")
    )

    def render(split: str, domain: str, label: str, index: int) -> tuple[np.ndarray, dict[str, str]]:
        wave, attrs, _kind = render_clip(cfg, machine, split, domain, label, index)
        return wave, attrs

    order = hidden_order if cfg.hide_labels else None
    return write_machine_tree(out, machine, cfg.section, plan, render, cfg.sample_rate, order, progress)


def clip_count(cfg: SynthConfig) -> int:
    return len(cfg.machines) * cfg.units * len(_plan(cfg))


__all__ = [
    "GROUND_TRUTH_DOMAIN_DIR",
    "GROUND_TRUTH_LABEL_DIR",
    "MACHINES",
    "SynthConfig",
    "SynthSummary",
    "clip_count",
    "generate",
    "render_clip",
]
