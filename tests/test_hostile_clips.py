"""Issue #16 items 2 and 9: clip length, short clips, malformed multipart, clips and model files of another
machine. Every hostile input gets one clear line (CLI: exit 2) or a 4xx naming it; never a 500, a traceback
or a silent wrong score. The model is a tiny log-mel detector built with the default ``[data] seconds = 0``."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from coopasd.config.settings import DataConfig, DetectConfig, ModelConfig
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.detect.detectors import FactoryModel, fit_detector
from coopasd.errors import AudioError, SectionError
from coopasd.inference.scoring import MIN_CLIP_SHARE, load_model, score_file
from coopasd.model.beats import BEATs
from coopasd.model.checkpoint import CheckpointError
from coopasd.model.embed import logmel_features
from coopasd.rundir.writer import save_model
from tests.helpers import cli, make_tree
from tests.test_beats import MICRO
from tests.test_serve import running
from tests.test_trust_inputs import assert_one_error_line, clips

RATE = 16_000
LENGTH = 8_000  # the model's clips: 0.5 s
SHORT_LENGTHS = [*range(1, 41), *range(41, 1601, 40)]  # 1 sample .. 0.1 s: 79 lengths
HOSTILE_MULTIPART = 30  # see test_malformed_multipart_is_a_400_never_a_500


def _model(name: str, machine: str = "fan") -> FactoryModel:
    waves = clips(10, seed=0 if machine == "fan" else 3)  # (10, 8000)
    is_target = np.array([False] * 8 + [True] * 2)
    detect = DetectConfig(features="logmel")
    det = fit_detector({"logmel": logmel_features(waves)}, is_target, detect, f"{machine}/00")
    return FactoryModel(
        name, BEATs(MICRO).eval(), ModelConfig(checkpoint="none"), detect, DataConfig(), {f"{machine}/00": det},
        clip_samples=waves.shape[1],
    )  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """RUN_DIR/models/fan.pt and valve.pt, and one fan test clip in DCASE layout."""
    root = tmp_path_factory.mktemp("hostile_clips")
    save_model(root / "run" / "models" / "fan.pt", _model("fan"))
    save_model(root / "run" / "models" / "valve.pt", _model("valve", "valve"))
    clip = root / "data" / "fan" / "test" / "section_00_source_test_normal_0001.wav"
    clip.parent.mkdir(parents=True)
    sf.write(clip, clips(1, seed=9)[0], RATE, subtype="FLOAT")
    return root


def _wav(wave: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ clip length


def test_a_longer_clip_of_the_same_audio_scores_the_same_and_says_its_length(run_dir, tmp_path):
    # Prepare: the same 0.5 s of audio, and 10 s of it (tiled 20 times)
    model = load_model(run_dir / "run" / "models" / "fan.pt")
    clip = run_dir / "data" / "fan" / "test" / "section_00_source_test_normal_0001.wav"
    long = tmp_path / "fan" / "test" / clip.name
    long.parent.mkdir(parents=True)
    sf.write(long, np.tile(sf.read(clip, dtype="float32")[0], 20), RATE, subtype="FLOAT")
    # Execute
    short_row, long_row = score_file(model, clip), score_file(model, long)
    # Assert: before the fix the 10 s clip was scored at 10 s against banks of 0.5 s clips
    assert long_row.result.score == pytest.approx(short_row.result.score, rel=1e-6)
    assert (long_row.clip_seconds, long_row.scored_seconds) == (10.0, 0.5)


def test_clips_far_too_short_are_refused_naming_file_and_length(run_dir, tmp_path):
    model = load_model(run_dir / "run" / "models" / "fan.pt")
    shortest = int(np.ceil(MIN_CLIP_SHARE * LENGTH))
    for n in SHORT_LENGTHS:
        path = tmp_path / f"short_{n}.wav"
        sf.write(path, clips(1, seed=n)[0][:n], RATE, subtype="FLOAT")
        with pytest.raises(AudioError, match=rf"short_{n}\.wav: clip lasts .* \({n} samples at 16000 Hz\)"):
            score_file(model, path, "fan", "00")
    path = tmp_path / "just_long_enough.wav"
    sf.write(path, clips(1)[0][:shortest], RATE, subtype="FLOAT")
    assert score_file(model, path, "fan", "00").scored_seconds == 0.5  # tiled 4 times: scored


def test_short_clip_on_the_command_line_is_one_error_line(run_dir, tmp_path, monkeypatch, capsys):
    path = tmp_path / "tiny.wav"
    sf.write(path, np.zeros(10, np.float32) + 0.1, RATE, subtype="FLOAT")
    code, out, err = cli(monkeypatch, capsys, "score", "--model", str(run_dir / "run" / "models" / "fan.pt"), str(path))
    assert_one_error_line(code, out, err, "tiny.wav", "10 samples", "0.5 s clips")


def test_short_uploads_are_a_422_naming_the_clip_and_its_length(run_dir):
    model = load_model(run_dir / "run" / "models" / "fan.pt")
    with running(model) as url, httpx.Client(base_url=url, timeout=30) as client:
        health = client.get("/health").json()
        for n in SHORT_LENGTHS:
            reply = client.post("/score", files={"file": (f"up_{n}.wav", _wav(clips(1, seed=n)[0][:n]))})
            assert reply.status_code == 422, (n, reply.text)
            assert f"up_{n}.wav: clip lasts" in reply.json()["detail"] and f"({n} samples" in reply.json()["detail"]
        ok = client.post("/score", files={"file": ("ok.wav", _wav(np.tile(clips(1)[0], 3)))}).json()
        docs = client.get("/docs")
    assert health["seconds"] == 0.5 and health["min_seconds"] == 0.125
    assert ok["clip_seconds"] == 1.5 and ok["scored_seconds"] == 0.5
    assert docs.status_code == 404  # no page that loads scripts from a CDN


def _multipart_cases() -> list[tuple[str, bytes]]:
    """(content type, body) pairs that are not a usable multipart upload."""
    wav = _wav(clips(1)[0])
    b = "XyZ"
    part = f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
    cases = [
        (f"multipart/form-data; boundary={b}", b"garbage without any boundary"),
        (f"multipart/form-data; boundary={b}", part + wav),  # no closing boundary
        (f"multipart/form-data; boundary={b}", part + wav[:100]),  # cut off
        (f"multipart/form-data; boundary={b}", f"--{b}--\r\n".encode()),  # no parts
        (f"multipart/form-data; boundary={b}", f"--{b}\r\n\r\n--{b}--\r\n".encode()),  # part without headers
        (
            f"multipart/form-data; boundary={b}",
            f"--{b}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{b}--\r\n".encode(),
        ),
        (
            f"multipart/form-data; boundary={b}",
            part.replace(b'name="file"', b'name="other"') + wav + f"\r\n--{b}--\r\n".encode(),
        ),
        (f"multipart/form-data; boundary={b}", part + b"\r\n--" + b.encode() + b"--\r\n"),  # empty file
        (f"multipart/form-data; boundary={b}", part + b"not audio at all" + f"\r\n--{b}--\r\n".encode()),
        (f"multipart/form-data; boundary={b}", (part + wav + b"\r\n") * 2 + f"--{b}--\r\n".encode()),  # two files
        (
            f"multipart/form-data; boundary={b}",
            f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'.encode() + b"X" * 20000,
        ),
        (f"multipart/form-data; boundary={b}", b"--" + b.encode() + b"\r\n" + b"H: " + b"v" * 70000 + b"\r\n\r\n"),
        ("multipart/form-data", part + wav + f"\r\n--{b}--\r\n".encode()),  # no boundary parameter
        ("multipart/form-data; boundary=", part + wav + f"\r\n--{b}--\r\n".encode()),
        ("multipart/form-data; boundary=other", part + wav + f"\r\n--{b}--\r\n".encode()),  # wrong boundary
        (f'multipart/form-data; boundary="{b}', part + wav + f"\r\n--{b}--\r\n".encode()),  # unbalanced quote
        (f"multipart/form-data; boundary={'z' * 300}", part + wav),
        (f"multipart/form-data; boundary={b}", "\u00e9\u00e8".encode("latin-1") * 100),
        (f"multipart/form-data; boundary={b}", b"\x00" * 5000),
        (f"multipart/form-data; boundary={b}", b"\r\n" * 3000),
        (f"multipart/form-data; boundary={b}", part.replace(b"form-data;", b"") + wav + f"\r\n--{b}--\r\n".encode()),
        (f"multipart/form-data; boundary={b}", part.replace(b"Content-Disposition", b"Content-Dispo\x00") + wav),
        (f"multipart/form-data; boundary={b}", f"--{b}\r\nno colon here\r\n\r\nx\r\n--{b}--\r\n".encode()),
        (
            f"multipart/form-data; boundary={b}",
            part.replace(b"a.wav", b"section_07_source_test_normal_0001.wav") + wav + f"\r\n--{b}--\r\n".encode(),
        ),
        *[(f"multipart/form-data; boundary={b}", f"--{b}\r\n".encode() + b"x" * n) for n in (0, 1, 2, 3, 500, 4096)],
    ]
    assert len(cases) == HOSTILE_MULTIPART
    return cases


def test_malformed_multipart_is_a_400_never_a_500(run_dir):
    model = load_model(run_dir / "run" / "models" / "fan.pt")
    with running(model) as url, httpx.Client(base_url=url, timeout=30) as client:
        replies = [
            client.post("/score", content=body, headers={"content-type": kind}) for kind, body in _multipart_cases()
        ]
    bad = [
        (kind, body[:60], reply.status_code, reply.text[:200])
        for (kind, body), reply in zip(_multipart_cases(), replies, strict=True)
        if not 400 <= reply.status_code < 500 or not reply.json().get("detail") or "internal" in reply.json()["detail"]
    ]
    assert not bad


# ------------------------------------------------------------------------------------------ another machine


def test_a_clip_of_another_machine_or_section_is_refused(run_dir, tmp_path, monkeypatch, capsys):
    model_path = run_dir / "run" / "models" / "fan.pt"
    model = load_model(model_path)
    other = tmp_path / "gearbox" / "test" / "section_07_source_test_normal_0001.wav"
    other_machine = tmp_path / "gearbox" / "test" / "section_00_source_test_normal_0001.wav"
    plain = tmp_path / "x.wav"
    for path in (other, other_machine, plain):
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, clips(1)[0], RATE, subtype="FLOAT")
    # Execute / Assert: before the fix the model's only section scored both silently
    with pytest.raises(SectionError, match=r"section_07.*name says gearbox/07.*knows fan/00"):
        score_file(model, other)
    with pytest.raises(SectionError, match=r"name says gearbox/00"):
        score_file(model, other_machine)
    assert score_file(model, plain).result.section == "00"  # a name without machine or section: the only one
    code, out, err = cli(monkeypatch, capsys, "score", "--model", str(model_path), str(other))
    assert_one_error_line(code, out, err, str(other), "gearbox/07")
    with running(model) as url, httpx.Client(base_url=url, timeout=30) as client:
        reply = client.post("/score", files={"file": (other.name, other.read_bytes())})
    assert reply.status_code == 422 and "name says */07" in reply.json()["detail"]


def test_a_model_copied_over_another_factorys_file_is_refused(run_dir, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir / "run", run)
    shutil.copy(run / "models" / "valve.pt", run / "models" / "fan.pt")  # valve's model where fan's belongs
    with pytest.raises(CheckpointError, match=r"fan\.pt: holds factory 'valve' \(valve/00\).*factory 'fan'"):
        load_model(run / "models" / "fan.pt")
    clip = run_dir / "data" / "fan" / "test" / "section_00_source_test_normal_0001.wav"
    code, out, err = cli(monkeypatch, capsys, "score", "--model", str(run / "models" / "fan.pt"), str(clip))
    assert_one_error_line(code, out, err, "fan.pt", "factory 'valve'")
    assert load_model(run / "models" / "valve.pt").name == "valve"


def test_test_clips_of_another_length_are_scored_at_the_training_clips_length(tmp_path):
    # Prepare: 0.5 s training clips, 1.25 s test clips, [data] seconds = 0 (the default)
    make_tree(tmp_path / "data", machines=("fan",))
    for path in (tmp_path / "data" / "fan" / "test").glob("*.wav"):
        wave, rate = sf.read(path, dtype="float32")
        sf.write(path, np.concatenate([wave, wave, wave[: len(wave) // 2]]), rate)
    # Execute
    (data,) = load_all(discover_clips(tmp_path / "data"), parse_factories("plant=fan", ["fan"]), DataConfig())
    # Assert: before the fix the test set kept its own 1.25 s, which coopasd score never scores
    assert data.train_waves.shape[1] == data.test_waves.shape[1] == LENGTH


def test_a_model_file_without_its_clip_length_is_refused_not_guessed(tmp_path, monkeypatch, capsys):
    # Prepare: what coopasd wrote before models recorded their clip length ([data] seconds = 0)
    model = _model("fan")
    model.clip_samples = 0
    path = save_model(tmp_path / "run" / "models" / "fan.pt", model)
    clip = tmp_path / "clip.wav"
    sf.write(clip, clips(1)[0], RATE, subtype="FLOAT")
    # Execute / Assert: scoring at each file's own length would be a silent wrong answer
    export = ("export", "--model", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx"))
    for command in (("score", "--model", str(path), str(clip)), export):
        code, out, err = cli(monkeypatch, capsys, *command)
        assert_one_error_line(code, out, err, "factory model 'fan' does not record the clip length")
    assert not (tmp_path / "m.onnx").exists()
