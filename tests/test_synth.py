from __future__ import annotations

import csv

import numpy as np
import pytest

from coopasd.data.features import logmel_statistics
from coopasd.data.layout import discover_clips
from coopasd.data.synth import MACHINES, SynthConfig, anomaly_strength, generate, render_clip
from coopasd.errors import ConfigError
from tests.helpers import TINY, make_tree


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, tiny_tree):
    again = make_tree(tmp_path / "again")
    other = make_tree(tmp_path / "other", seed=TINY.seed + 1)
    name = "fan/train/" + sorted(p.name for p in (tiny_tree / "fan" / "train").iterdir())[0]
    assert (tiny_tree / name).read_bytes() == (again / name).read_bytes()
    other_names = sorted(p.name for p in (other / "fan" / "train").iterdir())
    first = (other / "fan" / "train" / other_names[0]).read_bytes()
    assert first != (tiny_tree / name).read_bytes()


def test_a_machine_does_not_depend_on_which_others_are_made():
    a = render_clip(SynthConfig(machines=("fan",), seconds=0.3), "fan", "train", "source", "normal", 4)
    b = render_clip(SynthConfig(machines=("valve", "fan"), seconds=0.3), "fan", "train", "source", "normal", 4)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_counts_and_manifest(tiny_tree):
    clips = discover_clips(tiny_tree)
    for machine in TINY.machines:
        own = [c for c in clips if c.machine_type == machine]
        assert len(own) == TINY.train_source + TINY.train_target + 2 * TINY.test_per_domain
    assert (tiny_tree / "synth.json").is_file()


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_target_domain_uses_unseen_attribute_values(machine):
    spec = MACHINES[machine]
    shifted = [k for k in spec.source_attrs if not set(spec.source_attrs[k]) & set(spec.target_attrs[k])]
    assert shifted, f"{machine}: the target domain must shift at least one attribute"
    assert len(spec.anomalies) >= 3 and len(spec.source_attrs) >= 2


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_every_attribute_really_changes_the_sound(machine):
    cfg = SynthConfig(machines=(machine,), seconds=1.0)
    rendered = [render_clip(cfg, machine, "train", "source", "normal", i) for i in range(40)]
    feats = logmel_statistics(np.stack([w for w, _, _ in rendered]))
    for key in MACHINES[machine].source_attrs:
        values = np.array([a[key] for _, a, _ in rendered])
        first, second = sorted(set(values))[:2]
        a, b = feats[values == first], feats[values == second]
        # effect size (Cohen's d) of the attribute on each log-mel statistic
        d = np.abs(a.mean(0) - b.mean(0)) / np.sqrt((a.var(0) + b.var(0)) / 2 + 1e-6)
        assert d.max() > 2.0 and (d > 1.0).sum() >= 10, f"{machine}: attribute '{key}' barely changes the sound"


def test_anomalies_change_the_sound_and_difficulty_scales_them():
    rng = np.random.default_rng(0)
    easy = np.mean([anomaly_strength(0.0, rng) for _ in range(200)])
    hard = np.mean([anomaly_strength(1.0, rng) for _ in range(200)])
    assert easy > 5 * hard
    cfg = SynthConfig(machines=("gearbox",), seconds=1.0, difficulty=0.0)
    normal = logmel_statistics(
        np.stack([render_clip(cfg, "gearbox", "test", "source", "normal", i)[0] for i in range(10)])
    )
    anom = [render_clip(cfg, "gearbox", "test", "source", "anomaly", i) for i in range(10)]
    assert all(kind in MACHINES["gearbox"].anomalies for _, _, kind in anom)
    anom_feats = logmel_statistics(np.stack([w for w, _, _ in anom]))
    mean, std = normal.mean(0), normal.std(0) + 1e-6
    spread = np.linalg.norm((normal - mean) / std, axis=1).mean()
    assert np.linalg.norm((anom_feats - mean) / std, axis=1).mean() > 1.5 * spread


def test_hidden_label_form_writes_ground_truth(tmp_path):
    root = make_tree(tmp_path / "h", machines=("fan",), hide_labels=True)
    names = sorted(p.name for p in (root / "fan" / "test").iterdir())
    assert names == [f"section_00_{i:04d}.wav" for i in range(2 * TINY.test_per_domain)]
    with open(root / "ground_truth_data" / "ground_truth_fan_section_00_test.csv") as handle:
        rows = list(csv.reader(handle))
    assert [r[0] for r in rows] == names and sum(r[1] == "1" for r in rows) == TINY.test_per_domain
    attrs = (root / "fan" / "attributes_00.csv").read_text()
    assert "test/" not in attrs  # the attributes of hidden test clips would reveal the domain


def test_bad_settings_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown machine"):
        SynthConfig(machines=("toaster",))
    with pytest.raises(ConfigError, match="difficulty"):
        SynthConfig(difficulty=2.0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        generate(TINY, tmp_path / "full")
