"""Property-based tests (hypothesis) over the data layer, the detector, the config and the CLI.

Whatever the input (random bytes, truncated or lying WAV headers, odd rates, channel counts and
sample formats, NaN/inf/huge samples, very short and long clips, unicode and path-traversal-looking
names, copies, empty folders, csvs that disagree with the files): the result is a clear
CoopasdError, a counted skip, or a correct answer. Never a traceback, a hang or a silent wrong
answer. Runs are derandomized (the same examples every time) and write no example database;
``pytest --hypothesis-show-statistics`` prints how many cases each property ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import tomli_w
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from coopasd.cli.app import main
from coopasd.config.settings import BaselineConfig, DataConfig, DetectConfig, RunConfig, load_run_config
from coopasd.data.audio import MAX_ABS_SAMPLE, decode_audio
from coopasd.data.layout import DOMAINS, LABELS, check_trainable, discover_clips, parse_clip_path
from coopasd.detect.detectors import fit_detector
from coopasd.errors import AudioError, BadClipsError, ConfigError, CoopasdError, DetectorError, LayoutError
from coopasd.experiment.baseline import run_baseline
from coopasd.model.embed import logmel_features

MAX_SECONDS = 60  # what decode_audio accepts in these tests (longer clips: a clear AudioError)
PROPERTY = settings(
    max_examples=40,
    deadline=30_000,  # ms per example: a hang fails the test instead of stalling it (loose: CI is noisy)
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------- audio bytes


@settings(PROPERTY, max_examples=60)
@given(st.binary(max_size=3000) | st.binary(max_size=200).map(lambda b: b"RIFF\xff\xff\xff\x7fWAVEfmt " + b))
def test_random_bytes_are_a_clip_or_an_audio_error(data):
    try:
        wave = decode_audio(data, "random.wav", seconds=0.5, max_seconds=30)
    except AudioError as err:
        event("AudioError")
        assert str(err).startswith("random.wav: ")
        return
    event("loaded")
    assert wave.shape == (8000,) and wave.dtype == np.float32 and np.isfinite(wave).all()


SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]
AMPLITUDES = [0.0, 1e-6, 0.3, 1.0, 40.0, 1e5, 1e7, 1e19]


@st.composite
def wav_files(draw) -> tuple[bytes, dict]:
    """A WAV written by soundfile from drawn settings, then perhaps damaged; and what is known about it."""
    rate = draw(st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000]) | st.integers(100, 200_000))
    channels = draw(st.integers(1, 6))
    subtype = draw(st.sampled_from(SUBTYPES))
    frames = draw(st.integers(0, max(1, 60_000 // channels)))
    amplitude = draw(st.sampled_from(AMPLITUDES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    samples = (amplitude * rng.uniform(-1, 1, size=(frames, channels))).astype(np.float64)
    special = draw(st.sampled_from(["none", "none", "nan", "inf", "huge"]))
    if special != "none" and frames and subtype in ("FLOAT", "DOUBLE"):
        samples[draw(st.integers(0, frames - 1)), 0] = {"nan": np.nan, "inf": -np.inf, "huge": 3e30}[special]
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, subtype=subtype, format="WAV")
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "huge_header", "flip"]))
    if damage == "truncate" and len(data) > 1:
        data = data[: draw(st.integers(1, len(data) - 1))]
    elif damage == "huge_header" and len(data) >= 44:
        data = data[:40] + struct.pack("<I", 0xFFFFFFF0) + data[44:]  # the data chunk claims ~4 GB
    elif damage == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    stored = samples if subtype in ("FLOAT", "DOUBLE") else np.clip(samples, -1, 1)
    with np.errstate(invalid="ignore"):
        peak = float(np.abs(stored).max()) if frames else 0.0
    short_enough = frames / rate <= MAX_SECONDS and frames * channels <= MAX_SECONDS * 2 * 96_000
    usable = damage == "none" and frames > 0 and special == "none" and peak <= MAX_ABS_SAMPLE and short_enough
    return data, {"rate": rate, "frames": frames, "usable": usable, "damage": damage, "peak": peak, "subtype": subtype}


@settings(PROPERTY, max_examples=80)
@given(wav_files(), st.sampled_from([0.5, None]))
def test_any_wav_is_a_correct_clip_or_an_audio_error(wav, seconds):
    data, known = wav
    try:
        wave = decode_audio(data, "clip.wav", seconds=seconds, max_seconds=MAX_SECONDS)
    except AudioError as err:
        event(f"AudioError ({known['damage']})")
        assert str(err).startswith("clip.wav: ")
        assert not known["usable"], f"a valid file was refused: {err}"  # no false alarm on good audio
        if known["damage"] == "none" and known["subtype"] in ("FLOAT", "DOUBLE") and known["peak"] > MAX_ABS_SAMPLE:
            assert "samples reach" in str(err) or "NaN" in str(err)
        return
    event(f"loaded ({known['damage']})")
    assert known["damage"] != "truncate", "a truncated file loaded silently"
    assert wave.dtype == np.float32 and wave.ndim == 1 and np.isfinite(wave).all()
    assert np.abs(wave).max() <= 2 * MAX_ABS_SAMPLE  # resampling may overshoot a little, never explode
    if seconds:
        assert wave.shape == (8000,)
        assert np.isfinite(logmel_features(wave[None])).all()  # what the detector sees is finite too
    elif known["usable"]:
        assert abs(len(wave) - known["frames"] * 16_000 / known["rate"]) <= 2


# ---------------------------------------------------------------- file names

DCASE_LIKE = r"section_\d{2}_(source|target)_(train|test)_(normal|anomaly)_\d{1,5}(_\w{0,12})?|section_\d{1,3}_\d{1,6}"
TRICKY_NAMES = [
    "../../etc/passwd",
    "..",
    "section_00_source_train_normal_0001_a_..",
    "section_00_source_train_normal_0001_[/x]_1",
    "section_00_source_train_normal_0001_ü_ß",
    "section_00_target_test_anomaly_000000000000000000000000000000001",
    "section_0_source_train_normal_0001",
    "section_00_0001",
    "section_00_source_test_normal_0001 ",
    "SECTION_00_source_train_normal_0001",
    "section_00_source_train_normal_-1",
]


@settings(PROPERTY, max_examples=150)
@given(
    st.sampled_from(TRICKY_NAMES)
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00/"), min_size=1, max_size=60)
    | st.from_regex(
        r"section_\d{1,3}_(source|target|x)_(train|test)_(normal|anomaly)_\d{1,5}(_\w{0,12})?", fullmatch=True
    ),
    st.sampled_from(["train", "test"]),
)
def test_any_file_name_parses_correctly_or_is_a_layout_error(stem, split):
    path = Path("fan") / split / f"{stem}.wav"
    assume(path.name == f"{stem}.wav" and path.parent.name == split)  # a name, not a path
    try:
        clip = parse_clip_path(path, "fan", split)
    except LayoutError as err:
        event("LayoutError")
        assert str(err).startswith(str(path))
        return
    event("parsed")
    assert clip.name == path.name and clip.split == split and len(clip.section) == 2 and clip.section.isdigit()
    assert clip.index >= 0 and (clip.domain in DOMAINS or clip.labels_hidden) and (clip.label in (*LABELS, None))
    assert stem.startswith(f"section_{clip.section}_")


# ---------------------------------------------------------------- whole data trees


def _wav(path: Path, seed: int, seconds: float = 0.1) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.2 * rng.normal(size=int(16_000 * seconds))).astype(np.float32), 16_000, subtype="PCM_16")


@st.composite
def trees(draw) -> dict:
    """A spec of a small DCASE tree: machines, clip counts, copies, bad files, hidden labels, csvs."""
    machines = draw(st.lists(st.sampled_from(["fan", "valve", "ünïcode", "a b", "x[1]"]), min_size=1, max_size=2))
    spec = {"machines": {}, "on_error": draw(st.sampled_from(["raise", "skip"]))}
    for machine in dict.fromkeys(machines):
        spec["machines"][machine] = {
            "source": draw(st.integers(0, 4)),
            "target": draw(st.integers(0, 2)),
            "test": draw(st.integers(0, 3)),
            "copies": draw(st.integers(0, 3)),  # extra copies of the first source clip
            "bad": draw(st.sampled_from([None, "train", "test"])),  # one unreadable file, properly named
            "hidden": draw(st.booleans()),  # eval-form test names + ground-truth csvs
            "truth": draw(st.sampled_from(["right"] * 4 + ["missing_row", "flipped", "binary", "markup", "none"])),
            "attributes": draw(st.sampled_from(["none"] * 4 + ["agree", "disagree", "binary"])),
        }
    return spec


def _write_tree(root: Path, spec: dict) -> dict[tuple[str, str], str]:
    """Write the tree; returns what the ground-truth csvs say ({(machine, file name): "0"|"1"})."""
    truth: dict[tuple[str, str], str] = {}
    seed = 0
    for machine, m in spec["machines"].items():
        (root / machine / "train").mkdir(parents=True)
        (root / machine / "test").mkdir(parents=True)
        for domain in ("source", "target"):
            for i in range(m[domain]):
                seed += 1
                _wav(root / machine / "train" / f"section_00_{domain}_train_normal_{i:04d}_spd_{i % 2}.wav", seed)
        first = root / machine / "train" / "section_00_source_train_normal_0000_spd_0.wav"
        for c in range(m["copies"] if first.exists() else 0):
            (root / machine / "train" / f"section_00_source_train_normal_{100 + c:04d}_spd_0.wav").write_bytes(
                first.read_bytes()
            )
        rows = []
        for i in range(m["test"]):
            seed += 1
            label = "anomaly" if i % 2 else "normal"
            name = f"section_00_{i:04d}.wav" if m["hidden"] else f"section_00_source_test_{label}_{i:04d}_spd_0.wav"
            _wav(root / machine / "test" / name, seed)
            rows.append((name, "1" if label == "anomaly" else "0"))
        if m["bad"]:
            kind = "source_train_normal_0999_spd_0" if m["bad"] == "train" else "source_test_normal_0999_spd_0"
            (root / machine / m["bad"] / f"section_00_{kind}.wav").write_bytes(b"RIFF\x00\x00")
        if m["hidden"] and rows and m["truth"] != "none":
            for folder in ("ground_truth_data", "ground_truth_domain"):
                path = root / folder / f"ground_truth_{machine}_section_00_test.csv"
                path.parent.mkdir(exist_ok=True)
                listed = rows[1:] if m["truth"] == "missing_row" else rows
                if m["truth"] == "flipped" and folder == "ground_truth_data":
                    listed = [(n, "0" if v == "1" else "1") for n, v in listed]  # disagrees with the "truth"
                text = "".join(f"{n},{v if folder == 'ground_truth_data' else '0'}\n" for n, v in listed)
                if m["truth"] == "binary":
                    path.write_bytes(b"\xff\xfe\x00" + bytes(range(256)))
                    continue
                path.write_text(text.replace(",0\n", ",[/x]\n", 1) if m["truth"] == "markup" else text)
                if folder == "ground_truth_data":
                    truth.update({(machine, n): v for n, v in listed})
        if m["attributes"] != "none":
            path = root / machine / "attributes_00.csv"
            names = sorted(p.name for p in (root / machine / "train").glob("*.wav"))
            value = {"agree": None, "disagree": "9", "binary": None}[m["attributes"]]
            if m["attributes"] == "binary":
                path.write_bytes(bytes(range(255, -1, -1)))
            else:
                body = "".join(f"{n},spd,{value or n.rsplit('_', 1)[1].removesuffix('.wav')}\n" for n in names)
                path.write_text("file_name,d1p,d1v\n" + body)
    return truth


@settings(PROPERTY, max_examples=30, deadline=60_000)
@given(trees())
def test_any_tree_gives_correct_scores_or_a_clear_error(spec):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        truth = _write_tree(root, spec)
        try:
            clips = discover_clips(root)
            check_trainable(clips)
            run = run_baseline(clips, DataConfig(seconds=0.1, on_error=spec["on_error"]), BaselineConfig())
        except BadClipsError as err:
            event("BadClipsError")
            assert spec["on_error"] == "raise" and "0999" in str(err)  # the bad file is named
            return
        except (LayoutError, DetectorError) as err:
            event(type(err).__name__)
            assert str(err) and "Traceback" not in str(err)
            return
        event(f"scored ({len(run.skipped)} skipped)")
        by_name = {(c.machine_type, c.name): c for c in clips}
        for (machine, name), value in truth.items():  # labels come from the csv, never silently from elsewhere
            clip = by_name.get((machine, name))
            if clip is not None and not clip.labels_hidden:
                assert clip.label == ("anomaly" if value == "1" else "normal")
        bad = [m for m in spec["machines"].values() if m["bad"]]
        assert len(run.skipped) == len(bad)  # every unreadable file counted, none silently dropped
        for section in run.sections:
            assert np.isfinite(section.scores).all() and len(section.scores) == len(section.clips)
            assert all(c.split == "test" and c.machine_type == section.machine_type for c in section.clips)


# ---------------------------------------------------------------- the detector


@settings(PROPERTY, max_examples=15)
@given(
    st.integers(1, 10),
    st.integers(0, 4),
    st.integers(1, 6),
    st.integers(0, 5),
    st.sampled_from([1e-9, 1.0, 1e6]),
    st.sampled_from(["loo", "none", "density"]),
    st.integers(0, 2**32 - 1),
)
def test_copies_never_change_scores_and_scores_stay_finite(n_source, n_target, dim, copies, scale, normalize, seed):
    rng = np.random.default_rng(seed)
    source = scale * rng.normal(size=(n_source, dim))
    target = scale * rng.normal(size=(n_target, dim)) + scale
    queries = scale * rng.normal(size=(5, dim))
    cfg = DetectConfig(features="logmel", normalize=normalize)
    feats = np.concatenate([source, target])
    is_target = np.array([False] * n_source + [True] * n_target)
    try:
        det = fit_detector({"logmel": feats}, is_target, cfg, "fan/00")
    except DetectorError as err:
        event("DetectorError")
        assert str(err).startswith("fan/00") and "distinct" in str(err)
        return
    event("fitted")
    scores = det.score({"logmel": queries})
    assert np.isfinite(scores).all() and (scores >= 0).all() and not math.isnan(det.threshold)
    doubled = np.concatenate([np.repeat(source[:1], copies, axis=0), source, target])
    det2 = fit_detector({"logmel": doubled}, np.array([False] * (copies + n_source) + [True] * n_target), cfg, "fan/00")
    assert np.allclose(det2.score({"logmel": queries}), scores, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------- config and command line

VALUES = (
    st.integers(-(10**7), 10**7)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.booleans()
    | st.sampled_from([0, -1, 1000000, 0.0, 1.5, "lora", "cuda", "fan:x", "[/x]"])
)


def _keys() -> list[tuple[str, str]]:
    defaults = RunConfig()  # field types are strings under "from __future__ import annotations"
    return [
        (s.name, f.name) for s in dataclasses.fields(defaults) for f in dataclasses.fields(getattr(defaults, s.name))
    ]


@st.composite
def config_entries(draw) -> tuple[tuple[str, str], object]:
    """A config key and a value: often near its default (valid or just outside), else anything."""
    section, key = draw(st.sampled_from(_keys()))
    default = getattr(getattr(RunConfig(), section), key)
    near = [default]
    if isinstance(default, int | float) and not isinstance(default, bool):
        near += [default + 1, default * 2, -default, default - 1]
    return (section, key), draw(st.sampled_from(near) | VALUES)


@PROPERTY
@given(st.lists(config_entries(), min_size=1, max_size=4))
def test_any_config_values_load_or_name_the_bad_key(entries):
    values: dict = {}
    for (section, key), value in entries:
        values.setdefault(section, {})[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(tomli_w.dumps(values))
        try:
            cfg = load_run_config(path)
        except ConfigError as err:
            event("ConfigError")
            assert str(err).startswith(str(path)) and "\n" not in str(err)
            return
    event("loaded")
    for section, fields in values.items():  # what loads is what the file says
        for key, value in fields.items():
            assert getattr(getattr(cfg, section), key) == value


def _cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["coopasd", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        sys.argv = argv
    return code, out.getvalue() + err.getvalue()


@settings(PROPERTY, max_examples=25)
@given(
    st.sampled_from(["baseline", "train", "federate"]),
    st.sampled_from(["--k", "--epochs", "--rounds", "--config", "--checkpoint", "--factories", "--out"]),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=20)
    | st.sampled_from(["-1", "0", "1000000", "nan", "[/x]", "[train]", "../..", "/proc/x"]),
)
def test_any_flag_value_ends_in_a_clear_message_never_a_traceback(command, flag, value):
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # relative --out values land in tmp
        args = [command, "--data", str(Path(tmp) / "absent")]
        args += [flag, value] if flag == "--out" else ["--out", str(Path(tmp) / "run"), flag, value]
        try:
            code, text = _cli(*args)
        except CoopasdError as err:  # pragma: no cover - main() must turn these into a line
            raise AssertionError(f"escaped main(): {err}") from err
    event("click usage error" if "Usage:" in text else "one-line error")
    assert code == 2 and "Traceback" not in text, text  # the data folder is absent: never a success
    assert "error" in text.lower()
