"""docs/score-serve-export.md: every fenced bash and python block runs, in order, against a tiny model built
with the default config, and every score it prints equals ``coopasd score``'s within 1e-5."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from coopasd.config.settings import RunConfig, with_overrides
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.data.synth import SynthConfig, generate
from coopasd.learn.participant import TrainedHead, build_factory_model
from coopasd.model.checkpoint import initial_encoder
from coopasd.rundir.writer import save_model

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "score-serve-export.md"
BLOCK = re.compile(r"```(bash|python)\n(.*?)```", re.DOTALL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _json_values(text: str) -> list:
    """Every JSON value printed one after another (curl prints them without separators)."""
    decoder, values, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        value, i = decoder.raw_decode(text, i)
        values.append(value)
    return values


@pytest.fixture()
def workdir(tmp_path) -> Path:
    """run/models/fan.pt (default config, 0.4 s clips, [data] seconds = 0) and clip.wav."""
    synth = SynthConfig(machines=("fan",), seconds=0.4, train_source=4, train_target=2, test_per_domain=2, seed=2)
    generate(synth, tmp_path / "data")
    cfg = with_overrides(RunConfig(), "partition", factories="fan=fan")
    data = load_all(discover_clips(tmp_path / "data"), parse_factories(cfg.partition.factories, ["fan"]), cfg.data)
    encoder, _ = initial_encoder(cfg.model, seed=0)
    save_model(tmp_path / "run" / "models" / "fan.pt", build_factory_model(data[0], encoder, cfg, TrainedHead(), {}))
    shutil.copy(sorted((tmp_path / "data" / "fan" / "test").glob("*anomaly*.wav"))[0], tmp_path / "clip.wav")
    return tmp_path


def test_every_snippet_of_the_score_serve_export_page_runs_and_agrees(workdir):
    # Prepare
    blocks = BLOCK.findall(PAGE.read_text())
    assert [kind for kind, _ in blocks].count("python") == 4 and len(blocks) == 8
    port = _free_port()
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "NO_COLOR": "1",
    }
    outputs, server = [], None
    try:
        # Execute: each block in the page's order; the serve command in the background until the end
        for kind, code in blocks:
            code = code.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("--port 8000", f"--port {port}")
            if "coopasd serve" in code:
                server = subprocess.Popen(
                    code.strip().removesuffix("&").split(), cwd=workdir, env=env, start_new_session=True
                )
                deadline = time.monotonic() + 120
                while True:
                    assert server.poll() is None and time.monotonic() < deadline, "the service did not start"
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                        break
                    except OSError:
                        time.sleep(0.3)
                continue
            command = ["bash", "-euo", "pipefail", "-c", code] if kind == "bash" else [sys.executable, "-c", code]
            run = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, (code, run.stdout[-2000:], run.stderr[-2000:])
            outputs.append(run.stdout)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
    # Assert
    (record,) = json.loads(outputs[0])  # coopasd score --format json
    want = record["score"]
    assert Path(record["clip"]).is_absolute() and record["scored_seconds"] == 0.4
    health, multipart, raw = _json_values(outputs[1])  # the three curl calls
    assert health["seconds"] == 0.4 and health["factory"] == "fan"
    assert multipart["score"] == pytest.approx(want, rel=1e-5) and raw["score"] == pytest.approx(want, rel=1e-5)
    assert outputs[3].count("wrote ") == 3  # the export commands
    printed = [float(out.split()[0]) for out in (outputs[2], *outputs[4:])]  # urllib, safetensors, onnx, torchscript
    assert printed == pytest.approx([want] * 4, rel=1e-5)
    assert all((workdir / name).is_file() for name in ("fan.safetensors", "fan.onnx", "fan.torchscript.pt"))
