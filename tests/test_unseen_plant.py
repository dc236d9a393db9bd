from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from coopasd.config.settings import BaselineConfig, DataConfig
from coopasd.data.layout import discover_clips
from coopasd.data.synth import MACHINES
from coopasd.data.unseen_plant import (
    UNSEEN_MACHINES,
    UnseenPlantConfig,
    generate_unseen_plant,
    render_unseen_clip,
    unseen_clip_count,
)
from coopasd.errors import ConfigError
from coopasd.experiment.baseline import run_baseline
from tests.test_cli import run_cli

TINY = UnseenPlantConfig(seconds=0.5, train_source=4, train_target=2, test_per_domain=4, seed=3)


@pytest.fixture(scope="module")
def tiny_plant(tmp_path_factory) -> Path:
    """All six unseen machines, 0.5 s clips, 14 clips each (read-only)."""
    root = tmp_path_factory.mktemp("unseen") / "plant"
    generate_unseen_plant(TINY, root)
    return root


def test_layout_names_attributes_domains_and_labels(tiny_plant):
    clips = discover_clips(tiny_plant)
    assert sorted({c.machine_type for c in clips}) == sorted(UNSEEN_MACHINES)
    assert len(clips) == unseen_clip_count(TINY)
    for machine, spec in UNSEEN_MACHINES.items():
        own = [c for c in clips if c.machine_type == machine]
        count = {(c.split, c.domain, c.label): 0 for c in own}
        for c in own:
            count[(c.split, c.domain, c.label)] += 1
        assert count == {
            ("train", "source", "normal"): 4,
            ("train", "target", "normal"): 2,
            ("test", "source", "normal"): 2,
            ("test", "source", "anomaly"): 2,
            ("test", "target", "normal"): 2,
            ("test", "target", "anomaly"): 2,
        }
        for c in own:
            options = dict(spec.source_attrs if c.domain == "source" else spec.target_attrs)
            assert [k for k, _ in c.attributes] == list(options), c.name
            assert all(v in options[k] for k, v in c.attributes), c.name
        source, target = dict(spec.source_attrs), dict(spec.target_attrs)
        assert any(not set(source[k]) & set(target[k]) for k in source), f"{machine}: no shifted attribute"
        rows = list(csv.reader(open(tiny_plant / machine / "attributes_00.csv")))
        assert rows[0][:3] == ["file_name", "d1p", "d1v"] and len(rows) == len(own) + 1
    manifest = json.loads((tiny_plant / "unseen_plant.json").read_text())
    assert manifest["generator"] == "coopasd.data.unseen_plant" and manifest["config"]["seed"] == TINY.seed


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, tiny_plant):
    cfg = replace(TINY, machines=("press",))
    generate_unseen_plant(cfg, tmp_path / "again")
    generate_unseen_plant(replace(cfg, seed=TINY.seed + 1), tmp_path / "other")
    for split in ("train", "test"):
        names = sorted(p.name for p in (tiny_plant / "press" / split).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "again" / "press" / split).iterdir())
        for name in names:
            assert (tiny_plant / "press" / split / name).read_bytes() == (
                tmp_path / "again" / "press" / split / name
            ).read_bytes()
    first = sorted((tmp_path / "other" / "press" / "train").iterdir())[0]
    assert first.read_bytes() != sorted((tiny_plant / "press" / "train").iterdir())[0].read_bytes()


def test_a_clip_renders_alone_and_does_not_depend_on_other_machines():
    a = render_unseen_clip(replace(TINY, machines=("drill",)), "drill", "test", "target", "anomaly", 1)
    b = render_unseen_clip(TINY, "drill", "test", "target", "anomaly", 1)
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    assert a[2] in UNSEEN_MACHINES["drill"].faults and a[0].dtype == np.float32
    assert np.abs(a[0]).max() <= 1.0 and np.isfinite(a[0]).all()


def test_machines_and_fault_kinds_are_disjoint_from_the_dev_family():
    assert not set(UNSEEN_MACHINES) & set(MACHINES)
    dev_kinds = {kind for spec in MACHINES.values() for kind in spec.anomalies}
    unseen_kinds = {kind for spec in UNSEEN_MACHINES.values() for kind in spec.faults}
    assert not dev_kinds & unseen_kinds
    assert all(2 <= len(spec.faults) <= 3 for spec in UNSEEN_MACHINES.values())


def test_hidden_labels_come_back_from_the_ground_truth(tmp_path):
    cfg = replace(TINY, machines=("motor",), hide_labels=True)
    generate_unseen_plant(cfg, tmp_path / "h")
    names = sorted(p.name for p in (tmp_path / "h" / "motor" / "test").iterdir())
    assert names == [f"section_00_{i:04d}.wav" for i in range(8)]
    test = [c for c in discover_clips(tmp_path / "h") if c.split == "test"]
    assert sorted((c.domain, c.label) for c in test) == sorted(
        [(d, lab) for d in ("source", "target") for lab in ("normal", "anomaly")] * 2
    )
    rows = list(csv.reader(open(tmp_path / "h" / "motor" / "attributes_00.csv")))[1:]
    assert all("/train/" in row[0] for row in rows)


def test_faults_are_detectable_at_low_difficulty(tmp_path):
    cfg = UnseenPlantConfig(seconds=0.5, train_source=12, train_target=4, test_per_domain=16, difficulty=0.0)
    generate_unseen_plant(cfg, tmp_path / "easy")
    run = run_baseline(discover_clips(tmp_path / "easy"), DataConfig(seconds=0.5), BaselineConfig())
    for m in run.section_metrics():
        assert min(m.auc_source, m.auc_target) > 0.65 and m.auc_source + m.auc_target > 1.5, m


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"machines": ("fan",)}, "unknown unseen-plant machine"),
        ({"machines": ()}, "unknown unseen-plant machine"),
        ({"seconds": 0.0}, "seconds"),
        ({"train_source": 0}, "train_source"),
        ({"train_target": 0}, "train_target"),
        ({"test_per_domain": 1}, "test_per_domain"),
        ({"difficulty": 1.5}, "difficulty"),
        ({"difficulty": -0.1}, "difficulty"),
        ({"sample_rate": 8000}, "sample_rate"),
    ],
)
def test_invalid_configs_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        UnseenPlantConfig(**change)


def test_a_non_empty_output_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        generate_unseen_plant(replace(TINY, machines=("blower",)), tmp_path)


def test_cli_writes_the_unseen_family(tmp_path, monkeypatch, capsys):
    small = ["--seconds", "0.3", "--train-source", "2", "--train-target", "1", "--test-per-domain", "2"]
    code, out = run_cli(monkeypatch, capsys, "synth", "--family", "unseen", "--out", str(tmp_path / "u"), *small)
    assert code == 0, out
    assert "compressor: 3 train, 4 test clips; anomalies: misfire, valve_flutter, piston_slap" in out
    assert sorted(p.name for p in (tmp_path / "u").iterdir()) == sorted([*UNSEEN_MACHINES, "unseen_plant.json"])
    code, out = run_cli(
        monkeypatch, capsys, "synth", "--family", "unseen", "--machines", "fan", "--out", str(tmp_path / "x")
    )
    assert code == 2 and "unknown unseen-plant machine type(s) ['fan']" in out
    code, out = run_cli(monkeypatch, capsys, "synth", "--machines", "fan", "--out", str(tmp_path / "d"), *small)
    assert code == 0 and "fan: 3 train, 4 test clips" in out and (tmp_path / "d" / "synth.json").is_file()
