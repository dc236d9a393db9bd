"""Trust (issue 10): no silent wrong scores, files nobody can poison, one clear line for every misuse.

Each test reproduces one finding and checks the fix: degenerate memory banks, absurd sample values
and NaN scores (A); sealed model and checkpoint files, code-free loading, the global checkpoint's
hash and factory local state (B); config values, CLI misuse, markup in messages, empty folders and
stale run directories (C).
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from coopasd.config.settings import DataConfig, DetectConfig, ModelConfig, TrainConfig, load_config
from coopasd.data.audio import decode_audio, load_audio
from coopasd.detect.detectors import FactoryModel, KnnDetector, fit_detector
from coopasd.errors import AudioError, DetectorError, ScoreError, SubmissionError
from coopasd.federation.checkpoint import GlobalCheckpoint, LocalState, verify_local_states
from coopasd.inference.scoring import score_wave
from coopasd.learn.train import TrainingSet, make_head, train_local
from coopasd.model.beats import BEATs
from coopasd.model.checkpoint import CheckpointError, load_beats, read_checkpoint, seal
from coopasd.model.embed import logmel_features
from coopasd.rundir.writer import save_model, write_submission
from tests.helpers import cli, make_tree, write_wav
from tests.test_beats import MICRO

SECTION = "fan/00"


def assert_one_error_line(code: int, out: str, err: str, *fragments: str) -> None:
    """Exit code 2, no traceback, exactly one 'error:' line holding every fragment."""
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def clips(n: int, seed: int = 0, seconds: float = 0.5) -> np.ndarray:
    """``n`` distinct noise clips with different spectral tilts, ``(n, samples)`` float32 at 16 kHz."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, int(16_000 * seconds)))
    tilt = rng.uniform(0.1, 0.9, size=(n, 1))
    shaped = noise.copy()
    shaped[:, 1:] += tilt * noise[:, :-1]
    return (0.1 * shaped).astype(np.float32)


def small_model(path: Path, waves: np.ndarray | None = None) -> tuple[FactoryModel, Path]:
    """A factory model with a log-mel detector for fan/00 (8 source + 2 target clips), saved to ``path``."""
    waves = clips(10) if waves is None else waves
    is_target = np.array([False] * (len(waves) - 2) + [True] * 2)
    detect = DetectConfig(features="logmel")
    det = fit_detector({"logmel": logmel_features(waves)}, is_target, detect, SECTION)
    torch.manual_seed(0)
    model = FactoryModel(
        "north", BEATs(MICRO).eval(), ModelConfig(checkpoint="none"), detect, DataConfig(seconds=0.5), {SECTION: det}
    )
    return model, save_model(path, model)


# ---------------------------------------------------------------- A: silent wrong scores


def test_duplicate_training_clips_keep_scores_on_a_normal_scale(caplog):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(12, 16)).astype(np.float32)
    target = rng.normal(size=(3, 16)).astype(np.float32)
    queries = base[:6] + 0.3 * rng.normal(size=(6, 16)).astype(np.float32)
    cfg = DetectConfig(features="logmel")
    once = fit_detector({"logmel": np.concatenate([base, target])}, np.array([False] * 12 + [True] * 3), cfg, SECTION)
    doubled = np.concatenate([base, base, base, target])  # every source clip copied twice more
    with caplog.at_level(logging.WARNING):
        det = fit_detector({"logmel": doubled}, np.array([False] * 36 + [True] * 3), cfg, SECTION)
    scores = det.score({"logmel": queries})
    # before the fix: scale 1e-12, scores ~1e11 and every clip flagged; now copies count once
    assert np.isfinite(scores).all() and scores.max() < 10
    assert np.allclose(scores, once.score({"logmel": queries}), rtol=1e-4)
    kept = det.training_scores()  # copies get NaN: the threshold sees each recording once
    assert np.isnan(kept).sum() == 24 and np.allclose(np.sort(kept[~np.isnan(kept)]), np.sort(once.training_scores()))
    assert det.threshold == pytest.approx(once.threshold, rel=1e-2)  # same scores; the gamma fit's tolerance
    assert "fan/00 logmel: 24 of 36 source-domain training clips are copies" in caplog.text


def test_a_bank_of_copies_takes_the_sections_scale_with_a_warning(caplog):
    rng = np.random.default_rng(1)
    source = rng.normal(size=(10, 8))
    target = np.repeat(rng.normal(size=(1, 8)), 4, axis=0)  # four copies of one target recording
    with caplog.at_level(logging.WARNING):
        det = KnnDetector(DetectConfig(standardize=False)).fit(source, target, "valve/01")
    assert np.isfinite(list(det.scales.values())).all() and min(det.scales.values()) > 0.1
    assert "valve/01: the target bank holds one distinct clip" in caplog.text
    train = det.training_scores()
    assert np.isnan(train).sum() == 3 and np.isfinite(train[:11]).all() and np.isfinite(det.threshold)


def test_near_copies_floor_the_scale_with_a_warning(caplog):
    rng = np.random.default_rng(2)
    distinct = rng.normal(size=(10, 8))
    pairs = np.concatenate([distinct, distinct + 1e-4 * rng.normal(size=(10, 8))])  # each clip twice, re-encoded
    with caplog.at_level(logging.WARNING):
        det = KnnDetector(DetectConfig(standardize=False)).fit(pairs, None, "gearbox/00")
    spread = np.median(np.linalg.norm(distinct[:, None] - distinct[None], axis=-1)[~np.eye(10, dtype=bool)])
    assert det.scales["source"] >= 0.01 * spread * 0.99
    assert "gearbox/00: the source bank's clips are near-copies" in caplog.text


@pytest.mark.parametrize(
    ("features", "is_target", "message"),
    [
        (np.ones((5, 4)), [False] * 5, "5 normal training clip(s) but 1 distinct"),  # all identical
        (np.ones((1, 4)), [False], "1 normal training clip(s) but 1 distinct"),  # a bank of one
        (np.eye(4), [True] * 4, "no source-domain normal training clips"),  # only target-domain clips
    ],
)
def test_sections_that_cannot_make_a_detector_are_clear_errors(features, is_target, message):
    for normalize in ("loo", "none", "density"):
        with pytest.raises(DetectorError, match=re.escape(message)) as err:
            fit_detector({"logmel": features}, np.array(is_target), DetectConfig(normalize=normalize), SECTION)
        assert str(err.value).startswith(SECTION)


def test_k_larger_than_a_bank_is_clamped_with_a_warning(caplog):
    rng = np.random.default_rng(3)
    with caplog.at_level(logging.WARNING):
        det = KnnDetector(DetectConfig(k=50, standardize=False)).fit(rng.normal(size=(20, 4)), None, "slider/00")
    assert "slider/00: k = 50 but the source bank holds 20 distinct clip(s)" in caplog.text
    assert np.isfinite(det.score(rng.normal(size=(3, 4)))).all()


@pytest.mark.parametrize("value", [1e19, -3e7, 1e30])
def test_absurd_sample_magnitude_is_rejected_at_load(tmp_path, value):
    wave = np.zeros(8000, np.float32)
    wave[100] = value
    path = write_wav(tmp_path / "huge.wav", wave, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"huge\.wav: samples reach .*broken file"):
        load_audio(path)
    with pytest.raises(AudioError, match="samples reach"):
        decode_audio(path.read_bytes(), "upload.wav")


def test_float_audio_above_full_scale_still_loads_with_finite_features(tmp_path):
    wave = clips(1)[0] * 40.0  # a float file in physical units, well above digital full scale
    path = write_wav(tmp_path / "loud.wav", wave, subtype="FLOAT")
    loaded = load_audio(path, seconds=0.5)
    assert np.allclose(loaded, wave) and np.isfinite(logmel_features(loaded[None])).all()


def test_a_nan_score_is_never_written(tmp_path):
    with pytest.raises(SubmissionError, match=r"b\.wav \(nan\)"):
        write_submission(tmp_path, "fan", "00", ["a.wav", "b.wav"], np.array([0.5, np.nan]), np.array([0, 1]))
    with pytest.raises(SubmissionError, match=r"refusing to write 1 score"):
        write_submission(tmp_path, "fan", "00", ["a.wav"], np.array([np.inf]), np.array([1]))
    assert not (tmp_path / "submission").exists()


def test_a_nan_score_is_an_error_naming_the_clip_not_a_verdict(tmp_path, monkeypatch, capsys):
    model, _ = small_model(tmp_path / "ok.pt")
    det = model.detectors[SECTION].members["logmel"]
    det.banks = {k: torch.full_like(v, float("nan")) for k, v in det.banks.items()}  # a broken bank
    with pytest.raises(ScoreError, match="odd.wav"):
        score_wave(model, clips(1)[0], "fan", "00", "odd.wav")
    path = save_model(tmp_path / "nan.pt", model)
    clip = write_wav(tmp_path / "section_00_source_test_normal_0001.wav", clips(1)[0])
    code, out, err = cli(monkeypatch, capsys, "score", "--model", str(path), str(clip), "--machine", "fan")
    assert_one_error_line(code, out, err, clip.name, "not a finite number")
    assert "normal" not in out and "nan" not in out


# ---------------------------------------------------------------- B: integrity


def test_every_bit_flip_in_a_factory_model_is_refused(tmp_path):
    _, path = small_model(tmp_path / "north.pt")
    data = path.read_bytes()
    accepted_by_torch = 0
    for i in range(12):
        flipped = bytearray(data)
        flipped[(2 * i + 1) * len(data) // 24] ^= 1 << (i % 8)  # 12 places spread over the whole file
        bad = tmp_path / f"flip{i}.pt"
        bad.write_bytes(bytes(flipped))
        try:
            torch.load(io.BytesIO(bytes(flipped)), weights_only=True)
            accepted_by_torch += 1
        except Exception:  # noqa: BLE001 - counting what plain torch.load lets through
            pass
        with pytest.raises(CheckpointError) as err:
            FactoryModel.load(bad)
        message = str(err.value)
        assert message.startswith(str(bad)) and "\n" not in message
    assert accepted_by_torch >= 6  # what happened before: torch alone loads most damaged files
    assert FactoryModel.load(path).detectors[SECTION].threshold > 0  # the intact file still loads


def test_truncated_and_unsealed_model_files_are_refused(tmp_path):
    _, path = small_model(tmp_path / "north.pt")
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) - 40, len(data) // 2, 100):
        short = tmp_path / f"cut{cut}.pt"
        short.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=f"{short.name}.*(checksum|truncated)"):
            FactoryModel.load(short)
    resaved = tmp_path / "resaved.pt"  # an edited payload written back without the seal
    payload = torch.load(path, weights_only=True)
    payload["meta"]["detectors"][SECTION]["threshold"] = 1e9
    torch.save(payload, resaved)
    with pytest.raises(CheckpointError, match="no coopasd checksum"):
        FactoryModel.load(resaved)


def test_sealed_files_stay_plain_torch_checkpoints_and_official_files_still_load(tmp_path):
    _, path = small_model(tmp_path / "north.pt")
    assert zipfile.ZipFile(path).comment.startswith(b"coopasd-seal/1 sha256:")
    assert set(torch.load(path, weights_only=True)) == {"cfg", "model", "meta"}  # official BEATs code reads it
    assert load_beats(path).cfg == MICRO
    official = tmp_path / "BEATs_iter3.pt"  # the official layout carries no checksum
    torch.save({"cfg": MICRO.to_dict(), "model": BEATs(MICRO).state_dict()}, official)
    assert load_beats(official).cfg == MICRO


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a poisoned model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_everywhere(tmp_path):
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save({"cfg": MICRO.to_dict(), "model": {}, "meta": {"x": _Payload(marker)}}, buffer)
    for sealed in (False, True):  # even with a valid seal (a forger), nothing runs
        path = tmp_path / f"evil_{sealed}.pt"
        path.write_bytes(seal(buffer.getvalue()) if sealed else buffer.getvalue())
        loaders = [FactoryModel.load, load_beats, read_checkpoint, GlobalCheckpoint.load, LocalState.read]
        for load in loaders:
            with pytest.raises(CheckpointError, match=f"{path.name}: .*(refused|checksum)"):
                load(path)
    assert not marker.exists()


def test_global_checkpoint_hash_covers_strategy_state_and_history(tmp_path):
    state = {"momentum_vector": [torch.ones(3), torch.zeros(2)]}
    GlobalCheckpoint(2, {"w": torch.full((3,), 2.0)}, state, "x = 1\n", [{"round": 1, "answered": 2}]).save(tmp_path)
    latest = tmp_path / "latest.pt"
    assert GlobalCheckpoint.load(latest).strategy_state["momentum_vector"][0].tolist() == [1.0, 1.0, 1.0]
    for edit in ("momentum", "history"):  # edited and written back with the old hash (no seal)
        payload = torch.load(latest, weights_only=True)
        if edit == "momentum":
            payload["strategy_state"]["momentum_vector"][0][1] = 1e35
        else:
            payload["history"][0]["answered"] = 3
        edited = tmp_path / f"{edit}.pt"
        torch.save(payload, edited)
        with pytest.raises(CheckpointError, match="hash mismatch over parameters, strategy state and history"):
            GlobalCheckpoint.load(edited)
    raw = latest.read_bytes()  # flip one bit of the momentum tensor's bytes inside the sealed file
    with zipfile.ZipFile(latest) as archive:
        momentum = next(i for i in archive.infolist() if archive.read(i) == torch.ones(3).numpy().tobytes())
    flipped = bytearray(raw)
    flipped[raw.index(torch.ones(3).numpy().tobytes(), momentum.header_offset) + 5] ^= 0x40
    (tmp_path / "flipped.pt").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        GlobalCheckpoint.load(tmp_path / "flipped.pt")


def test_an_empty_or_corrupt_local_state_stops_a_resume_with_its_name(tmp_path, tiny_tree):
    from coopasd.federation.simulation import run_simulated

    work = tmp_path / "run" / "factories" / "fan"
    path = LocalState({"w": torch.ones(2)}, ["fan/00/-"], {"x": torch.zeros(1)}).save(work, 1)
    assert LocalState.latest(work, 2).classes == ["fan/00/-"]
    for damage in (b"", path.read_bytes()[:-30], b"PK\x03\x04 not a zip"):
        path.write_bytes(damage)
        with pytest.raises(CheckpointError, match=f"{path}: factory local state"):
            LocalState.latest(work, 2)
        with pytest.raises(CheckpointError, match="factory local state"):
            verify_local_states([work])
    GlobalCheckpoint(1, {"w": torch.ones(1)}, {}, "", []).save(tmp_path / "run" / "checkpoints")
    cfg = load_config(None, model={"checkpoint": "none"}, federation={"rounds": 2})
    with pytest.raises(CheckpointError, match="round_001.pt: factory local state"):  # before any round starts
        run_simulated(cfg, tiny_tree, tmp_path / "run", resume=True)


# ---------------------------------------------------------------- C: misuse -> one clear line


CONFIG_ERRORS = [
    ("[data]\nseconds = -1.0\n", "[data] seconds = -1.0"),
    ("[data]\nsample_rate = 0\n", "[data] sample_rate = 0: must be 16000"),
    ("[data]\nsample_rate = 8000\n", "[data] sample_rate = 8000"),
    ("[train]\nbatch_size = 0\n", "[train] batch_size = 0"),
    ("[train]\nlr = 0.0\n", "[train] lr = 0.0"),
    ("[train]\nlr = nan\n", "[train] lr = nan"),
    ("[train]\nepochs = -1\n", "[train] epochs = -1"),
    ("[detect]\nk = 0\n", "[detect] k = 0"),
    ("[detect]\nk = 1000000\n", "[detect] k = 1000000: must be between 1 and 1000"),
    ("[detect]\nthreshold_quantile = 1.5\n", "[detect] threshold_quantile = 1.5: must lie in (0, 1)"),
    ("[detect]\nthreshold_quantile = 0.0\n", "[detect] threshold_quantile = 0.0"),
    ("[model]\nlora_rank = -1\n", "[model] lora_rank = -1"),
    ("[federation]\nrounds = 0\n", "[federation] rounds = 0"),
    ("[federation]\nshare = 'lora'\n", "[federation] share = 'lora' needs LoRA adapters"),
    ("[federation]\ndrop_out = 'fan:x'\n", "[federation] drop_out = 'fan:x'"),
    ("[federation]\ndrop_out = 'fan 1'\n", "is not 'factory:round+round'"),
    ("[model]\nlayer = 9\n", "[model] layer = 9: the encoder"),  # known only once the encoder is loaded
    ("[train]\ndevice = 'cuda'\n", "[train] device = 'cuda': no CUDA device"),
    ("[train]\nepochs = 'ten'\n", "[train] epochs = 'ten': expected int"),
]


@pytest.mark.parametrize(("text", "fragment"), CONFIG_ERRORS, ids=[f[0].split("\n")[1] for f in CONFIG_ERRORS])
def test_bad_config_values_are_one_line_naming_section_key_value(tmp_path, monkeypatch, capsys, text, fragment):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = tmp_path / "bad.toml"
    config.write_text(f"[model]\ncheckpoint = 'none'\n{text}" if "[model]" not in text else text)
    args = ["train", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "run"), "--config", str(config)]
    if "[model]" in text:
        args += ["--checkpoint", "none"]
    code, out, err = cli(monkeypatch, capsys, *args)
    assert_one_error_line(code, out, err, fragment)  # "[train]" etc. shown, not eaten as markup


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["train", "--epochs", "-1"], "[train] epochs = -1"),
        (["federate", "--rounds", "0"], "[federation] rounds = 0"),
        (["baseline", "--k", "1000000"], "[baseline] k = 1000000"),
        (["federate", "--share", "lora"], "share = 'lora' needs LoRA adapters"),
    ],
)
def test_bad_flag_values_are_one_line(tmp_path, monkeypatch, capsys, tiny_tree, args, fragment):
    code, out, err = cli(monkeypatch, capsys, *args, "--data", str(tiny_tree), "--out", str(tmp_path / "r"))
    assert_one_error_line(code, out, err, fragment)


def test_epochs_zero_is_legal_and_means_no_fine_tuning():
    cfg = load_config(None, train={"epochs": 0})
    assert cfg.train.epochs == 0
    torch.manual_seed(0)
    encoder = BEATs(MICRO)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head = make_head(encoder, 2, cfg.train, "mean_freq")
    data = TrainingSet(clips(4), np.array([0, 1, 0, 1]), np.zeros(4, dtype=bool))
    assert train_local(encoder, head, data, ModelConfig(layer=1), TrainConfig(epochs=0)) == []
    assert all(torch.equal(v, before[k]) for k, v in encoder.state_dict().items())


def test_bad_paths_are_one_line(tmp_path, monkeypatch, capsys, tiny_tree):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["baseline", "--data", str(tiny_tree), "--out", str(a_file)], "exists and is not a folder"),
        (["baseline", "--data", str(tiny_tree), "--out", str(a_file / "run")], "cannot write"),
        (
            ["baseline", "--data", str(tiny_tree), "--out", str(tmp_path / "r"), "--config", str(tmp_path)],
            "is a directory",
        ),
        (["certs", "--out", str(tmp_path / "certs"), "--days", "-5"], "--days -5"),
        (["pretrain", "--out", str(tmp_path)], "is a folder; give a file name"),
        (["synth", "--out", str(a_file)], "exists and is not a folder"),
    ]
    for args, fragment in cases:
        code, out, err = cli(monkeypatch, capsys, *args)
        assert_one_error_line(code, out, err, fragment)
    assert not (tmp_path / "certs" / "ca.key").exists()


def test_score_for_an_unknown_machine_and_section_is_one_line(tmp_path, monkeypatch, capsys):
    _, path = small_model(tmp_path / "north.pt")
    clip = write_wav(tmp_path / "c.wav", clips(1)[0])
    code, out, err = cli(monkeypatch, capsys, "score", "--model", str(path), str(clip), "--machine", "pump")
    assert_one_error_line(code, out, err, "no detector for machine type 'pump'", "fan/00")
    code, out, err = cli(monkeypatch, capsys, "score", "--model", str(path), str(clip), "--section", "07")
    assert_one_error_line(code, out, err, "section '07'")
    code, out, err = cli(monkeypatch, capsys, "score", "--model", str(path), str(clip), "--machine", "fan")
    assert code == 0 and "fan/00" in out


def test_data_tree_problems_are_one_line(tmp_path, monkeypatch, capsys, tiny_tree):
    hidden = make_tree(tmp_path / "hidden", machines=("fan",), hide_labels=True, train_source=3, test_per_domain=2)
    (hidden / "ground_truth_data" / "ground_truth_fan_section_00_test.csv").write_bytes(bytes(range(256)) * 4)
    only_target, empty = tmp_path / "only_target", tmp_path / "empty"
    shutil.copytree(tiny_tree, only_target)
    for path in (only_target / "fan" / "train").glob("*_source_*"):
        path.unlink()
    shutil.copytree(tiny_tree, empty)
    (empty / "pump" / "train").mkdir(parents=True)
    cases = [
        (hidden, "baseline", "ground_truth_fan_section_00_test.csv: cannot read ground-truth csv"),
        (only_target, "baseline", "fan section 00: 2 training clip(s), all target-domain"),
        (only_target, "train", "no source-domain normal ones"),
        (empty, "baseline", "pump: machine folder holds no audio clips"),
    ]
    for i, (data, command, fragment) in enumerate(cases):
        args = [command, "--data", str(data), "--out", str(tmp_path / f"r{i}"), "--checkpoint", "none"]
        code, out, err = cli(monkeypatch, capsys, *(args if command == "train" else args[:-2]))
        assert code == 2 and "Traceback" not in err and fragment in err, err


def test_markup_in_messages_is_printed_as_text(tmp_path, monkeypatch, capsys, tiny_tree):
    data = tmp_path / "data"
    shutil.copytree(tiny_tree, data)
    name = sorted((data / "fan" / "train").glob("*.wav"))[0].name
    attrs = name.split("_", 6)[6].removesuffix(".wav").split("_")
    row = ",".join([f"fan/train/{name}", attrs[0], "[/x]", *attrs[2:]])
    (data / "fan" / "attributes_00.csv").write_text("file_name,d1p,d1v,d2p,d2v\n" + row + "\n")
    code, out, err = cli(monkeypatch, capsys, "baseline", "--data", str(data), "--out", str(tmp_path / "r"))
    assert_one_error_line(code, out, err, "[/x]", "disagree with its file name")


def test_a_reused_run_directory_keeps_no_stale_results(tmp_path, monkeypatch, capsys, tiny_tree):
    run = tmp_path / "run"
    code, out, err = cli(monkeypatch, capsys, "baseline", "--data", str(tiny_tree), "--out", str(run))
    assert code == 0 and (run / "metrics.json").is_file(), err
    (run / "models").mkdir()
    (run / "models" / "old.pt").write_bytes(b"old")
    (run / "notes.txt").write_text("mine")  # not a result file: left alone
    hidden = make_tree(tmp_path / "hidden", machines=("gearbox",), hide_labels=True, train_source=4, test_per_domain=2)
    shutil.rmtree(hidden / "ground_truth_data")
    shutil.rmtree(hidden / "ground_truth_domain")
    code, out, err = cli(monkeypatch, capsys, "baseline", "--data", str(hidden), "--out", str(run))
    assert code == 2 and "--force" in err  # a finished run is replaced only on request
    code, out, err = cli(monkeypatch, capsys, "baseline", "--data", str(hidden), "--out", str(run), "--force")
    assert code == 0 and "labels hidden" in out, err
    for stale in ("metrics.json", "metrics.csv", "report.html", "scores.png", "models/old.pt"):
        assert not (run / stale).exists(), stale
    assert sorted(p.name for p in (run / "submission").iterdir()) == [
        "anomaly_score_gearbox_section_00_test.csv",
        "decision_result_gearbox_section_00_test.csv",
    ]
    assert (run / "notes.txt").read_text() == "mine" and (run / "config.toml").is_file()


def test_audio_written_by_soundfile_in_every_subtype_loads_or_fails_clearly(tmp_path):
    for subtype in ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "PCM_U8"):
        path = tmp_path / f"{subtype}.wav"
        sf.write(path, clips(1)[0], 16_000, subtype=subtype)
        wave = load_audio(path, seconds=0.5)
        assert wave.shape == (8000,) and np.abs(wave - clips(1)[0]).max() < 0.02, subtype
