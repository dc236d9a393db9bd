"""``coopasd export``: safetensors (scored by the numpy-only plant scorer, torch blocked), ONNX (scored
by onnxruntime) and TorchScript files give ``coopasd score``'s scores. About 60 s on 2 cores, most
of it the ONNX exporter."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from coopasd.config.settings import DetectConfig, RunConfig, with_overrides
from coopasd.data.audio import load_audio
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.data.synth import SynthConfig, generate
from coopasd.detect.detectors import FusedDetector, KnnDetector
from coopasd.inference.export import MemberScorer
from coopasd.inference.scoring import load_model, score_wave
from coopasd.learn.autoencoder import train_frame_autoencoder
from coopasd.learn.participant import TrainedHead, build_factory_model
from coopasd.model.encoders import initial_encoder
from coopasd.model.frame_autoencoder import carried_autoencoder
from coopasd.rundir.writer import save_model
from tests.test_cli import run_cli

SECTIONS = ("fan/00", "valve/00")
WEIGHTS = {"learned": 0.8, "logmel": 0.2}  # the "weighted" variant's member weights


@pytest.fixture(scope="module")
def factory(tmp_path_factory) -> dict:
    """One factory (fan + valve), untrained tiny encoder: the fusion detector (learned + log-mel members),
    and a learned-only one with cosine k=2 and LoRA adapters. Plus test clips per section."""
    root = tmp_path_factory.mktemp("export")
    synth = SynthConfig(machines=("fan", "valve"), seconds=0.5, train_source=4, train_target=2, test_per_domain=2)
    generate(dataclasses.replace(synth, seed=3), root / "data")
    cfg = with_overrides(RunConfig(), "model", checkpoint="none", preset="tiny")
    cfg = with_overrides(cfg, "data", seconds=0.5)
    cfg = with_overrides(cfg, "partition", factories="plant=fan+valve")
    cfg = with_overrides(cfg, "detect", features="fusion")  # learned + log-mel: what the numpy scorer covers
    data = load_all(discover_clips(root / "data"), parse_factories(cfg.partition.factories, ["fan", "valve"]), cfg.data)
    variants = {
        "fusion": cfg,
        "cosine_lora": with_overrides(
            with_overrides(cfg, "detect", features="learned", metric="cosine", k=2), "model", lora_rank=2
        ),
        "density": with_overrides(cfg, "detect", normalize="density", density_k=2),
        "aisfx": with_overrides(cfg, "detect", features="aisfx+logmel"),  # a frozen member
        "weighted": cfg,  # the fusion detector with member weights (set below)
        "ae": with_overrides(cfg, "detect", features="learned+logmel+ae"),  # the frame autoencoder member
    }
    paths = {}
    for name, run_cfg in variants.items():
        encoder, _ = initial_encoder(run_cfg.model, seed=0, autoencoder=name == "ae")
        if name == "ae":  # trained a little, so its scaling and weights are its own
            train_frame_autoencoder(carried_autoencoder(encoder), data[0].train_waves, 1, seed=0, device="cpu")
        generator = torch.Generator().manual_seed(1)
        for param_name, param in encoder.named_parameters():
            if ".lora_b" in param_name:  # adapters start at zero: make them count
                param.data.normal_(0.0, 0.05, generator=generator)
        model = build_factory_model(data[0], encoder, run_cfg, TrainedHead(), {"mode": "test"})
        if name == "weighted":
            model.detectors = {
                key: FusedDetector(det.members, det.threshold_quantile, WEIGHTS) for key, det in model.detectors.items()
            }
        paths[name] = save_model(root / name / "plant.pt", model)
    clips = {s: sorted((root / "data" / s.split("/")[0] / "test").glob("*.wav"))[:3] for s in SECTIONS}
    return {"root": root, "models": paths, "clips": clips}


def score_command(
    model_path: Path, clips: dict[str, list[Path]]
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """What ``coopasd score`` computes (its shared scoring path): per section (waves, scores, decisions)."""
    model = load_model(model_path)
    out = {}
    for key, paths in clips.items():
        machine, section = key.split("/")
        waves = np.stack([load_audio(p, model.data_cfg.sample_rate, model.data_cfg.seconds) for p in paths])
        results = [score_wave(model, w, machine, section) for w in waves]
        out[key] = (waves, np.array([r.score for r in results]), np.array([r.decision for r in results]))
    return out


def export(monkeypatch, capsys, model: Path, fmt: str, out: Path, *extra: str) -> str:
    code, text = run_cli(
        monkeypatch, capsys, "export", "--model", str(model), "--format", fmt, "--out", str(out), *extra
    )
    assert code == 0, text
    return text


@pytest.mark.parametrize("variant", ["fusion", "cosine_lora", "density", "weighted", "ae"])
def test_safetensors_scored_without_torch_equals_the_score_command(factory, variant, tmp_path, monkeypatch, capsys):
    # Prepare
    want = score_command(factory["models"][variant], factory["clips"])
    out = tmp_path / "plant.safetensors"
    np.save(tmp_path / "waves.npy", np.stack([w for w, _, _ in want.values()]))
    # Execute: export, then score in a fresh interpreter where any import of torch fails
    text = export(monkeypatch, capsys, factory["models"][variant], "safetensors", out)
    script = (
        "import sys, json, numpy as np; sys.modules['torch'] = None\n"
        "from coopasd.inference.plant_scorer import PlantScorer\n"
        f"s = PlantScorer.load({str(out)!r}); waves = np.load({str(tmp_path / 'waves.npy')!r})\n"
        f"res = {{k: [a.tolist() for a in s.score(w, k)] for k, w in zip({list(want)!r}, waves)}}\n"
        "print(json.dumps({'sections': s.sections, 'scores': res}))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    # Assert
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    assert got["sections"] == list(SECTIONS)
    assert f"wrote {out}" in text
    for key, (_, scores, decisions) in want.items():
        np.testing.assert_allclose(got["scores"][key][0], scores, rtol=1e-5, atol=1e-7)
        assert got["scores"][key][1] == decisions.tolist()


@pytest.mark.parametrize("variant", ["fusion", "weighted", "ae"])
def test_torchscript_per_section_equals_the_score_command(factory, variant, tmp_path, monkeypatch, capsys):
    # Prepare
    want = score_command(factory["models"][variant], factory["clips"])
    plain = score_command(factory["models"]["fusion"], factory["clips"])
    # Execute: several sections -> one file each, named after the section
    export(monkeypatch, capsys, factory["models"][variant], "torchscript", tmp_path / "plant.pt")
    # Assert
    for key, (waves, scores, decisions) in want.items():
        extra = {"coopasd.json": ""}
        module = torch.jit.load(tmp_path / f"plant.{key.replace('/', '_')}.pt", _extra_files=extra)
        with torch.no_grad():
            got_scores, got_decisions = module(torch.from_numpy(waves))
        np.testing.assert_allclose(got_scores.numpy(), scores, rtol=1e-5, atol=1e-7)
        assert got_decisions.tolist() == decisions.tolist()
        meta = json.loads(extra["coopasd.json"])
        assert meta["section"] == key and meta["sections"][key]["threshold"] == pytest.approx(
            load_model(factory["models"][variant]).detectors[key].threshold
        )
        members = ("learned", "logmel", "ae") if variant == "ae" else ("learned", "logmel")
        weights = WEIGHTS if variant == "weighted" else dict.fromkeys(members, 1 / len(members))
        assert meta["sections"][key]["weights"] == pytest.approx(weights)
        assert (variant == "fusion") == np.allclose(scores, plain[key][1], rtol=1e-4)


def test_torchscript_and_safetensors_carry_a_frozen_member(factory, tmp_path, monkeypatch, capsys):
    # Prepare
    model = factory["models"]["aisfx"]
    want = score_command(model, factory["clips"])
    # Execute
    export(monkeypatch, capsys, model, "torchscript", tmp_path / "plant.pt", "--section", "valve")
    code, text = run_cli(
        monkeypatch,
        capsys,
        "export",
        "--model",
        str(model),
        "--format",
        "safetensors",
        "--out",
        str(tmp_path / "plant.safetensors"),
    )
    # Assert
    waves, scores, decisions = want["valve/00"]
    with torch.no_grad():
        got_scores, got_decisions = torch.jit.load(tmp_path / "plant.pt")(torch.from_numpy(waves))
    np.testing.assert_allclose(got_scores.numpy(), scores, rtol=1e-5, atol=1e-7)
    assert got_decisions.tolist() == decisions.tolist()
    assert code == 0 and (tmp_path / "plant.safetensors").exists()  # scored in tests/test_default_export.py


@pytest.mark.parametrize("variant", ["weighted", "ae"])  # fusion with member weights; + the frame autoencoder
def test_onnx_whole_scoring_graph_equals_the_score_command(factory, variant, tmp_path, monkeypatch, capsys):
    import onnx
    import onnxruntime

    # Prepare
    want = score_command(factory["models"][variant], factory["clips"])
    out = tmp_path / "fan.onnx"
    waves, scores, decisions = want["fan/00"]
    # Execute: one section, asked by machine name
    export(monkeypatch, capsys, factory["models"][variant], "onnx", out, "--section", "fan")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got_scores, got_decisions = session.run(None, {"waveform": waves.astype(np.float32)})
    one, _ = session.run(None, {"waveform": waves[:1].astype(np.float32)})  # any batch size
    # Assert
    assert [i.name for i in session.get_inputs()] == ["waveform"]
    assert [o.name for o in session.get_outputs()] == ["score", "decision"]
    # the ae member measures one value per clip: its distances divide the float32 round-off of the log-mel
    # front-end (about 4e-7 between torch and ONNX Runtime) by the small spread of the normal clips' errors
    rtol = 1e-4 if variant == "ae" else 1e-5
    np.testing.assert_allclose(got_scores, scores, rtol=rtol, atol=1e-7)
    np.testing.assert_allclose(one, scores[:1], rtol=rtol, atol=1e-7)
    assert got_decisions.tolist() == decisions.tolist()
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert json.loads(meta["coopasd"])["section"] == "fan/00"
    assert not list(tmp_path.glob("fan.*_00.onnx"))  # --section: exactly the asked file


@pytest.mark.parametrize("normalize", ["loo", "density"])
def test_exported_member_measures_to_distinct_clips_like_the_detector(normalize):
    """Copies of a training clip count once in the detector (and its densities divide distances):
    the exported member scorer must see the same bank, not the raw one with its copies."""
    # Prepare: 12 clips, three of them copies of clip 0
    rng = np.random.default_rng(0)
    source = rng.normal(size=(12, 6)).astype(np.float32)
    source[[3, 7, 9]] = source[0]
    det = KnnDetector(DetectConfig(k=2, normalize=normalize, density_k=3)).fit(source, source[:2] + 0.1)
    queries = np.concatenate([source[:4] + 0.01, rng.normal(size=(5, 6)).astype(np.float32)])
    # Execute
    with torch.no_grad():
        got = MemberScorer(det)(torch.from_numpy(queries)).numpy()
    # Assert
    np.testing.assert_allclose(got, det.score(queries), rtol=1e-5, atol=1e-7)
    assert MemberScorer(det).bank_source.shape[0] == 9  # 12 clips, 3 copies


def test_export_errors_are_one_line(factory, tmp_path, monkeypatch, capsys):
    model = str(factory["models"]["fusion"])
    cases = {
        ("--format", "pickle"): "unknown export format 'pickle'",
        ("--format", "onnx", "--section", "00"): "--section 00: matches 2 of the model's sections",
        ("--format", "torchscript", "--section", "pump"): "--section pump: matches 0",
        ("--format", "safetensors", "--section", "fan"): "safetensors holds every section",
    }
    for args, message in cases.items():
        code, text = run_cli(monkeypatch, capsys, "export", "--model", model, "--out", str(tmp_path / "x"), *args)
        assert code == 2 and message in text and "Traceback" not in text, text
    assert not list(tmp_path.iterdir())  # nothing written for a refused export
