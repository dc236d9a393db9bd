from __future__ import annotations

import json

import numpy as np
import pytest

from coopasd.config.settings import DetectConfig, RunConfig, load_config, with_overrides
from coopasd.data.audio import load_many
from coopasd.data.partition import parse_factories
from coopasd.dcase.evaluation import read_score_file
from coopasd.detect.detectors import FactoryModel, FusedDetector, KnnDetector
from coopasd.errors import ConfigError
from coopasd.experiment.pipeline import run_learned_mode
from coopasd.report.run_report import write_run
from tests.test_cli import run_cli


def test_fused_detector_averages_members_and_round_trips():
    rng = np.random.default_rng(0)
    a = KnnDetector(DetectConfig(metric="euclidean")).fit(rng.normal(size=(30, 3)), rng.normal(size=(4, 3)))
    b = KnnDetector(DetectConfig(metric="cosine", standardize=False)).fit(
        rng.normal(size=(30, 5)), rng.normal(size=(4, 5))
    )
    fused = FusedDetector({"a": a, "b": b})
    q = {"a": rng.normal(size=(6, 3)), "b": rng.normal(size=(6, 5))}
    assert np.allclose(fused.score(q), (a.score(q["a"]) + b.score(q["b"])) / 2)
    again = FusedDetector.from_state(fused.state())
    assert np.allclose(again.score(q), fused.score(q)) and again.threshold == fused.threshold


def test_factory_partition_spec():
    machines = ["fan", "pump", "valve"]
    assert [f.machine_types for f in parse_factories("", machines)] == [("fan",), ("pump",), ("valve",)]
    two = parse_factories("north=fan+pump; south=valve", machines)
    assert [(f.name, f.machine_types) for f in two] == [("north", ("fan", "pump")), ("south", ("valve",))]
    with pytest.raises(ConfigError, match="belong to no factory"):
        parse_factories("north=fan", machines)
    with pytest.raises(ConfigError, match="both"):
        parse_factories("a=fan+pump+valve;b=fan", machines)
    with pytest.raises(ConfigError, match="unknown machine type 'drill'"):
        parse_factories("a=fan+pump+valve+drill", machines)


@pytest.mark.parametrize("mode", ["centralized", "local"])
def test_learned_modes_write_the_run_contract(tmp_path, tiny_tree, mode):
    cfg = load_config(
        None, train={"epochs": 1}, model={"checkpoint": "none"}, partition={"factories": "north=fan;south=valve"}
    )
    result = run_learned_mode(mode, tiny_tree, cfg)
    summary = write_run(tmp_path / mode, result, cfg, tiny_tree)
    run = tmp_path / mode
    assert summary is not None and summary.items() >= result.summary().items()  # + data tree and versions
    assert summary is not None and set(summary["machines"]) == {"fan", "valve"}
    assert "random initialization" in summary["encoder_start"]
    assert "random initialization" in (run / "report.html").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["training"]["all" if mode == "centralized" else "north"]) == 1
    assert sorted(p.name for p in (run / "models").iterdir()) == ["north.pt", "south.pt"]
    # a saved factory model, loaded alone, reproduces the run's scores for its own clips
    model = FactoryModel.load(run / "models" / "south.pt")
    assert model.name == "south" and list(model.detectors) == ["valve/00"]
    scores = read_score_file(run / "submission" / "anomaly_score_valve_section_00_test.csv")
    names = sorted(scores)[:3]
    waves = load_many([tiny_tree / "valve" / "test" / n for n in names], seconds=model.data_cfg.seconds).waves
    again, _ = model.score(waves, "valve", "00")
    assert again == pytest.approx([scores[n] for n in names], rel=1e-4)


def test_score_command_prints_score_and_decision(tmp_path, tiny_tree, monkeypatch, capsys):
    code, out = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--data",
        str(tiny_tree),
        "--out",
        str(tmp_path / "r"),
        "--mode",
        "local",
        "--checkpoint",
        "none",
        "--epochs",
        "1",
        "--features",
        "learned",
    )
    assert code == 0, out
    clip = sorted((tiny_tree / "fan" / "test").iterdir())[0]
    code, out = run_cli(monkeypatch, capsys, "score", "--model", str(tmp_path / "r" / "models" / "fan.pt"), str(clip))
    assert code == 0, out
    expected = read_score_file(tmp_path / "r" / "submission" / "anomaly_score_fan_section_00_test.csv")[clip.name]
    assert f"{expected:.4f}" in out and "fan/00" in out
    code, out = run_cli(
        monkeypatch,
        capsys,
        "score",
        "--model",
        str(tmp_path / "r" / "models" / "fan.pt"),
        str(tmp_path / "missing.wav"),
    )
    assert code == 2 and "missing.wav" in out
    code, out = run_cli(
        monkeypatch, capsys, "train", "--data", str(tiny_tree), "--out", str(tmp_path / "x"), "--mode", "federated-ish"
    )
    assert code == 2 and "--mode" in out


def test_frozen_real_audio_member_needs_no_training_and_travels_with_the_model(tmp_path, tiny_tree):
    cfg = load_config(None, detect={"features": "aisfx+logmel"}, partition={"factories": "north=fan;south=valve"})
    result = run_learned_mode("local", tiny_tree, cfg)
    summary = write_run(tmp_path / "run", result, cfg, tiny_tree)
    assert summary is not None and summary["training"] == {"north": [], "south": []}  # nothing was trained
    model = FactoryModel.load(tmp_path / "run" / "models" / "north.pt")
    assert set(model.frozen) == {"aisfx"} and set(model.detectors["fan/00"].members) == {"aisfx", "logmel"}
    scores = read_score_file(tmp_path / "run" / "submission" / "anomaly_score_fan_section_00_test.csv")
    names = sorted(scores)[:2]
    waves = load_many([tiny_tree / "fan" / "test" / n for n in names]).waves
    assert model.score(waves, "fan", "00")[0] == pytest.approx([scores[n] for n in names], rel=1e-5)


def test_detector_members_are_validated():
    with pytest.raises(ConfigError, match="features"):
        load_config(None, detect={"features": "learned+mfcc"})
    with pytest.raises(ConfigError, match="each once"):
        load_config(None, detect={"features": "logmel+logmel"})


def test_a_random_start_is_announced_once_not_again_by_the_settings_check(caplog):
    from coopasd.experiment.pipeline import preflight
    from coopasd.model.encoders import initial_encoder

    cfg = with_overrides(RunConfig(), "model", checkpoint="none")
    with caplog.at_level("WARNING", logger="coopasd.model.checkpoint"):
        preflight(cfg)  # before any clip is loaded: checks the settings, says nothing
        initial_encoder(cfg.model)  # the run's own start
    assert [r.getMessage() for r in caplog.records] == [
        "encoder starts from random initialization of the 'tiny' preset (no checkpoint: expect near-chance features)"
    ]
