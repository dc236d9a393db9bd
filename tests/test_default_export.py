"""The demo's default model (default config: learned + aiSFX + log-mel, ``[data] seconds = 0``) exports in
every format, and each export scores as ``coopasd score`` does within 1e-5. The model records the length
of the clips its banks hold; export, score and serve use it and say it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from coopasd.config.settings import RunConfig, with_overrides
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.data.synth import SynthConfig, generate
from coopasd.inference.scoring import load_model
from coopasd.learn.participant import TrainedHead, build_factory_model
from coopasd.model.checkpoint import initial_encoder
from coopasd.rundir.writer import save_model
from tests.test_cli import run_cli

SECONDS = 0.4  # the synthetic clips' own length; the run config keeps [data] seconds = 0 (the default)


@pytest.fixture(scope="module")
def default_model(tmp_path_factory) -> dict:
    """A factory (fan + valve) built with the default config, clips 0.4 s long, and a few test clips."""
    root = tmp_path_factory.mktemp("default_export")
    synth = SynthConfig(machines=("fan", "valve"), seconds=SECONDS, train_source=4, train_target=2, test_per_domain=2)
    generate(dataclasses.replace(synth, seed=5), root / "data")
    cfg = with_overrides(RunConfig(), "partition", factories="plant=fan+valve")
    assert cfg.data.seconds == 0 and cfg.detect.features == "learned+aisfx+logmel"
    data = load_all(discover_clips(root / "data"), parse_factories(cfg.partition.factories, ["fan", "valve"]), cfg.data)
    encoder, _ = initial_encoder(cfg.model, seed=0)
    model = build_factory_model(data[0], encoder, cfg, TrainedHead(), {"mode": "test"})
    path = save_model(root / "run" / "models" / "plant.pt", model)
    clips = sorted((root / "data" / "fan" / "test").glob("*.wav"))[:2]
    return {"root": root, "model": path, "clips": clips}


def _score_cli(monkeypatch, capsys, model: Path, clips: list[Path]) -> list[dict]:
    code, text = run_cli(monkeypatch, capsys, "score", "--model", str(model), "--format", "json", *map(str, clips))
    assert code == 0, text
    return json.loads(text)


def test_the_model_records_its_clip_length_and_score_says_it(default_model, monkeypatch, capsys):
    model = load_model(default_model["model"])
    assert model.data_cfg.seconds == 0 and model.clip_samples == round(SECONDS * 16000)
    rows = _score_cli(monkeypatch, capsys, default_model["model"], default_model["clips"])
    assert [r["scored_seconds"] for r in rows] == [SECONDS, SECONDS]
    assert all(Path(r["clip"]).is_absolute() for r in rows)


@pytest.mark.parametrize("fmt", ["safetensors", "onnx", "torchscript"])
def test_every_format_of_the_default_model_scores_as_the_score_command(
    default_model, fmt, tmp_path, monkeypatch, capsys
):
    # Prepare: what `coopasd score` says, and the waves it scored (the clips are the model's length)
    clips = default_model["clips"]
    want = np.array([r["score"] for r in _score_cli(monkeypatch, capsys, default_model["model"], clips)])
    from coopasd.data.audio import load_audio

    waves = np.stack([load_audio(p) for p in clips])
    np.save(tmp_path / "waves.npy", waves)
    out = tmp_path / f"plant.{fmt}"
    # Execute
    code, text = run_cli(
        monkeypatch,
        capsys,
        "export",
        "--model",
        str(default_model["model"]),
        "--format",
        fmt,
        "--out",
        str(out),
        *(("--section", "fan/00") if fmt != "safetensors" else ()),
    )
    assert code == 0, text
    if fmt == "safetensors":  # the numpy-only scorer, in an interpreter where torch cannot be imported
        script = (
            "import sys, json, numpy as np; sys.modules['torch'] = None\n"
            "from coopasd.inference.plant_scorer import PlantScorer\n"
            f"s = PlantScorer.load({str(out)!r})\n"
            f"print(json.dumps(s.score(np.load({str(tmp_path / 'waves.npy')!r}), 'fan/00')[0].tolist()))"
        )
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        got = np.array(json.loads(run.stdout))
    elif fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(["score"], {"waveform": waves.astype(np.float32)})[0]
    else:
        got = torch.jit.load(str(out))(torch.from_numpy(waves))[0].numpy()
    # Assert
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
