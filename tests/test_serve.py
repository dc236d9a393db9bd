"""``coopasd serve`` over real HTTP on 127.0.0.1: same numbers as ``coopasd score``, 4xx for every bad input."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import uvicorn

from coopasd.config.settings import RunConfig, with_overrides
from coopasd.data.audio import decode_audio, load_audio
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.data.synth import SynthConfig, generate
from coopasd.errors import AudioError, SectionError
from coopasd.inference.scoring import FactoryModel, load_model, resolve_section, score_wave
from coopasd.inference.serve import create_app
from coopasd.learn.participant import TrainedHead, build_factory_model
from coopasd.model.checkpoint import initial_encoder
from coopasd.rundir.writer import save_model
from tests.test_cli import run_cli

MAX_BYTES = 200_000  # small limits so that the oversize cases stay small
MAX_SECONDS = 2.0


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve") / "data"
    cfg = SynthConfig(machines=("fan", "valve"), seconds=0.5, train_source=4, train_target=2, test_per_domain=2, seed=1)
    generate(cfg, root)
    return root


@pytest.fixture(scope="module")
def model_paths(tree, tmp_path_factory) -> dict[str, Path]:
    """One factory ('plant': fan + valve) saved twice: log-mel detector, and fusion with an untrained tiny encoder."""
    cfg = with_overrides(RunConfig(), "model", checkpoint="none", preset="tiny")
    cfg = with_overrides(cfg, "data", seconds=0.5)
    cfg = with_overrides(cfg, "partition", factories="plant=fan+valve")
    data = load_all(discover_clips(tree), parse_factories(cfg.partition.factories, ["fan", "valve"]), cfg.data)[0]
    out = tmp_path_factory.mktemp("models")
    paths = {}
    for features in ("logmel", "fusion"):
        run_cfg = with_overrides(cfg, "detect", features=features)
        encoder, _ = initial_encoder(run_cfg.model, seed=0)
        model = build_factory_model(data, encoder, run_cfg, TrainedHead(), {"mode": "test"})
        paths[features] = save_model(out / features / "plant.pt", model)
    return paths


@contextmanager
def running(model: FactoryModel, **limits) -> Iterator[str]:
    """The service on a free 127.0.0.1 port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(model, **limits), log_config=None, lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module", params=["logmel", "fusion"])
def service(request, model_paths) -> Iterator[tuple[FactoryModel, Path, httpx.Client]]:
    model = load_model(model_paths[request.param])
    with running(model, max_upload_bytes=MAX_BYTES, max_seconds=MAX_SECONDS) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield model, model_paths[request.param], client


@pytest.fixture(scope="module")
def clips(tree, tmp_path_factory) -> dict[str, Path]:
    """A fan test clip as WAV (from the tree) and as FLAC (same samples)."""
    wav = sorted((tree / "fan" / "test").glob("*anomaly*.wav"))[0]
    flac = tmp_path_factory.mktemp("flac") / "fan" / "test" / wav.with_suffix(".flac").name
    flac.parent.mkdir(parents=True)
    samples, rate = sf.read(wav, dtype="int16")
    sf.write(flac, samples, rate, format="FLAC", subtype="PCM_16")
    return {"wav": wav, "flac": flac}


def wav_bytes(wave: np.ndarray, rate: int = 16_000, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def expected(model: FactoryModel, path: Path) -> dict:
    """What ``coopasd score`` computes for ``path``: its shared scoring path."""
    machine, section = resolve_section(model, path)
    wave = load_audio(path, model.data_cfg.sample_rate, model.data_cfg.seconds)
    return score_wave(model, wave, machine, section).to_dict()


def assert_same(got: dict, want: dict) -> None:
    assert got["score"] == pytest.approx(want["score"], rel=1e-6, abs=1e-9)
    assert {k: got[k] for k in ("decision", "threshold", "machine_type", "section")} == {
        k: want[k] for k in ("decision", "threshold", "machine_type", "section")
    }


@pytest.mark.parametrize("kind", ["wav", "flac"])
def test_score_equals_the_score_command(service, clips, kind, monkeypatch, capsys):
    model, model_path, client = service
    path = clips[kind]
    want = expected(model, path)
    code, out = run_cli(monkeypatch, capsys, "score", "--model", str(model_path), str(path))
    assert code == 0, out
    assert f"{want['score']:.4f}" in out and "fan/00" in out
    mime = "audio/wav" if kind == "wav" else "audio/flac"
    multipart = client.post("/score", params={"machine": "fan"}, files={"file": (path.name, path.read_bytes(), mime)})
    raw = client.post(
        "/score",
        params={"machine": "fan", "name": path.name},
        content=path.read_bytes(),
        headers={"content-type": mime},
    )
    octet = client.post(
        "/score",
        params={"machine": "fan", "section": "00"},
        content=path.read_bytes(),
        headers={"content-type": "application/octet-stream"},
    )
    for response in (multipart, raw, octet):
        assert response.status_code == 200, response.text
        body = response.json()
        assert_same(body, want)
        assert body["factory"] == "plant"
    assert multipart.json()["clip"] == path.name and octet.json()["clip"] == "upload"


def test_concurrent_requests_agree(service, clips):
    model, _, client = service
    want = expected(model, clips["wav"])
    data = clips["wav"].read_bytes()

    def post(_: int) -> dict:
        response = client.post("/score?machine=fan&section=00", content=data, headers={"content-type": "audio/x-wav"})
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(4) as pool:
        for got in pool.map(post, range(8)):
            assert_same(got, want)


def test_health_and_openapi(service):
    model, _, client = service
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["factory"] == "plant"
    assert health["sections"] == ["fan/00", "valve/00"] and health["sample_rate"] == 16_000
    assert health["max_upload_bytes"] == MAX_BYTES and health["features"] == model.detect_cfg.features
    schema = client.get("/openapi.json").json()
    assert {"/score", "/health"} <= set(schema["paths"])
    assert {"multipart/form-data", "audio/wav", "audio/flac"} <= set(
        schema["paths"]["/score"]["post"]["requestBody"]["content"]
    )


@pytest.fixture(scope="module")
def logmel_client(model_paths) -> Iterator[httpx.Client]:
    with running(load_model(model_paths["logmel"]), max_upload_bytes=MAX_BYTES, max_seconds=MAX_SECONDS) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


def _bad_requests(clip: Path) -> list[tuple[str, dict, int, str]]:
    """(case, httpx.post kwargs, expected status, a fragment of the detail)."""
    good = clip.read_bytes()
    rng = np.random.default_rng(0)
    nan = np.full(8000, 0.1, np.float32)
    nan[100] = np.nan
    fan = {"machine": "fan", "section": "00"}
    wav = {"content-type": "audio/wav"}
    return [
        ("empty raw body", {"content": b"", "headers": wav}, 400, "empty request body"),
        ("empty file field", {"files": {"file": ("a.wav", b"", "audio/wav")}}, 400, "empty file"),
        ("multipart without file", {"data": {"other": "x"}, "files": {"x": ("a.wav", good)}}, 400, "'file'"),
        ("no multipart boundary", {"content": good, "headers": {"content-type": "multipart/form-data"}}, 400, ""),
        ("random bytes", {"content": rng.bytes(5000), "headers": wav}, 422, "not a readable audio file"),
        ("random bytes, multipart", {"files": {"file": ("junk.wav", rng.bytes(5000))}}, 422, "junk.wav"),
        ("truncated wav", {"content": good[: len(good) // 2], "headers": wav}, 422, "truncated WAV"),
        ("header only", {"content": good[:44], "headers": wav}, 422, "upload"),
        ("zero samples", {"content": wav_bytes(np.zeros(0, np.float32)), "headers": wav}, 422, "zero-length"),
        ("NaN samples", {"content": wav_bytes(nan, subtype="FLOAT"), "headers": wav}, 422, "NaN"),
        ("too long", {"content": wav_bytes(np.zeros(16_000 * 3, np.float32)), "headers": wav}, 422, "at most 2 s"),
        ("text/plain", {"content": good, "headers": {"content-type": "text/plain"}}, 415, "unsupported content type"),
        ("unknown machine", {"content": good, "headers": wav, "params": {"machine": "pump"}}, 422, "'pump'"),
        ("unknown section", {"content": good, "headers": wav, "params": {**fan, "section": "07"}}, 422, "fan/07"),
        ("cannot tell", {"content": good, "headers": wav, "params": {}}, 422, "cannot tell"),
        ("oversize, declared", {"content": b"\0" * (MAX_BYTES + 1), "headers": wav}, 413, "limit"),
        ("oversize, streamed", {"content": iter([b"\0" * 50_000] * 5), "headers": wav}, 413, "limit"),
    ]


def test_bad_requests_get_a_clear_4xx_never_500(logmel_client, clips):
    for case, kwargs, status, fragment in _bad_requests(clips["wav"]):
        try:
            response = logmel_client.post("/score", **{"params": {"machine": "fan"}, **kwargs})
        except httpx.HTTPError as err:  # the server may close a refused upload mid-send
            pytest.fail(f"{case}: {err!r}")
        assert response.status_code == status, f"{case}: {response.status_code} {response.text}"
        detail = response.json()["detail"]
        assert isinstance(detail, str) and fragment in detail, f"{case}: {detail}"
    assert logmel_client.get("/health").status_code == 200  # still serving


def test_decode_audio_matches_load_audio_and_names_the_upload(clips):
    path = clips["flac"]
    assert np.array_equal(decode_audio(path.read_bytes(), "x.flac", 16_000, 0.5), load_audio(path, 16_000, 0.5))
    with pytest.raises(AudioError, match="up.wav: empty file"):
        decode_audio(b"", "up.wav")
    with pytest.raises(AudioError, match="up.wav: truncated WAV"):
        decode_audio(clips["wav"].read_bytes()[:1000], "up.wav")
    bomb = io.BytesIO()  # 1.5 s, but 6 channels at 192 kHz: too many samples to decode for a 2 s limit
    sf.write(bomb, np.zeros((288_000, 6), np.int16), 192_000, format="FLAC", subtype="PCM_16")
    with pytest.raises(AudioError, match="6 channels at 192000 Hz"):
        decode_audio(bomb.getvalue(), "bomb.flac", max_seconds=2.0)
    assert decode_audio(bomb.getvalue(), "bomb.flac", max_seconds=10.0).shape == (24_000,)


def test_resolve_section(model_paths, clips, monkeypatch, capsys):
    model = load_model(model_paths["logmel"])
    assert resolve_section(model, clips["wav"]) == ("fan", "00")  # <machine>/<split>/ folder + DCASE name
    assert resolve_section(model, "section_00_source_test_normal_0001.wav", machine="valve") == ("valve", "00")
    assert resolve_section(model, None, machine="fan") == ("fan", "00")
    with pytest.raises(SectionError, match="cannot tell"):
        resolve_section(model, "clip.wav")
    with pytest.raises(SectionError, match="no detector for fan/01"):
        resolve_section(model, clips["wav"], machine="fan", section="01")
    code, out = run_cli(
        monkeypatch, capsys, "score", "--model", str(model_paths["logmel"]), "--section", "01", str(clips["wav"])
    )
    assert code == 2 and "section '01'" in out
