"""``[detect] member_weights = "validated"``: member weights from held-back normal clips vs their
pseudo-anomalies (coopasd.detect.weighting), carried by the fused detector. About 5 s on 2 cores."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from coopasd.config.settings import DetectConfig, RunConfig, with_overrides
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.data.synth import SynthConfig, generate
from coopasd.dcase.results import FactoryResult, ModeResult
from coopasd.detect.detectors import FusedDetector, fit_detector
from coopasd.detect.weighting import auc_weights, member_aucs, pseudo_anomalies, validation_split
from coopasd.learn.participant import TrainedHead, build_factory_model, score_factory
from coopasd.model.checkpoint import initial_encoder


def _section(seed: int = 0, n: int = 240, dim: int = 8) -> dict:
    """Hand-made features of one section: ``logmel`` moves the pseudo-anomalies far off, ``aisfx`` draws
    them from the normal clips' own distribution (separates nothing)."""
    rng = np.random.default_rng(seed)
    is_target = np.arange(n) >= n - 20
    held = validation_split(is_target, 0.5, seed)
    m = int(held.sum())
    features = {"logmel": rng.normal(size=(n, dim)), "aisfx": rng.normal(size=(n, dim))}
    anomalies = {"logmel": rng.normal(size=(m, dim)) + 3.0, "aisfx": rng.normal(size=(m, dim))}
    return {"features": features, "is_target": is_target, "held": held, "anomalies": anomalies}


def test_a_member_that_separates_nothing_weighs_almost_nothing():
    # Prepare
    s = _section()
    # Execute
    aucs = member_aucs(s["features"], s["is_target"], s["held"], s["anomalies"], DetectConfig(), "fan/00")
    weights = auc_weights(aucs)
    # Assert
    assert aucs["logmel"] > 0.95 and abs(aucs["aisfx"] - 0.5) < 0.1
    assert weights["logmel"] > 0.85 and weights["aisfx"] < 0.15
    assert sum(weights.values()) == pytest.approx(1.0)


def test_auc_weights_are_the_gain_over_chance_or_equal_where_none_separates():
    # Execute
    gains = auc_weights({"learned": 0.9, "aisfx": 0.7, "logmel": 0.4})
    none = auc_weights({"learned": 0.5, "logmel": 0.3})
    # Assert
    assert gains == pytest.approx({"learned": 2 / 3, "aisfx": 1 / 3, "logmel": 0.0})
    assert none == {"learned": 0.5, "logmel": 0.5}


def test_validation_split_holds_back_a_share_per_domain_and_keeps_two_to_fit():
    # Prepare
    is_target = np.array([False] * 12 + [True] * 3)
    # Execute
    held = validation_split(is_target, 0.25, seed=5)
    again = validation_split(is_target, 0.25, seed=5)
    small = validation_split(np.array([False, False, True, True]), 0.5, seed=5)
    # Assert
    assert int(held[~is_target].sum()) == 3 and int(held[is_target].sum()) == 1
    np.testing.assert_array_equal(held, again)
    assert not small.any()  # two clips per domain: all of them stay to fit on


def test_pseudo_anomalies_are_one_seeded_perturbed_copy_per_clip():
    # Prepare
    waves = np.random.default_rng(0).normal(scale=0.1, size=(6, 8000)).astype(np.float32)
    # Execute
    one, two, other = pseudo_anomalies(waves, 3), pseudo_anomalies(waves, 3), pseudo_anomalies(waves, 4)
    # Assert
    assert one.shape == waves.shape and one.dtype == np.float32
    np.testing.assert_array_equal(one, two)
    assert not np.allclose(one, other)
    assert all(not np.allclose(a, w, atol=1e-3) for a, w in zip(one, waves, strict=True))


def test_weights_survive_the_state_round_trip_and_equal_is_todays_mean():
    # Prepare
    s = _section()
    features, is_target = s["features"], s["is_target"]
    queries = {name: f[:5] + 0.5 for name, f in features.items()}
    # Execute
    plain = fit_detector(features, is_target, DetectConfig(), "fan/00")
    weighted = fit_detector(features, is_target, DetectConfig(), "fan/00", {"logmel": 0.9, "aisfx": 0.1})
    restored = FusedDetector.from_state(weighted.state())
    old_state = {k: v for k, v in plain.state().items() if k != "weights"}  # saved before member weights
    old = FusedDetector.from_state(old_state)
    # Assert
    members = [m.score(queries[name]) for name, m in plain.members.items()]
    np.testing.assert_array_equal(plain.score(queries), np.mean(members, axis=0))
    np.testing.assert_array_equal(old.score(queries), plain.score(queries))
    assert old.weights is None and plain.weights is None
    np.testing.assert_allclose(weighted.score(queries), 0.9 * members[0] + 0.1 * members[1], rtol=1e-6)
    assert restored.weights == {"logmel": 0.9, "aisfx": 0.1}
    np.testing.assert_array_equal(restored.score(queries), weighted.score(queries))
    assert weighted.threshold != plain.threshold and restored.threshold == weighted.threshold
    with pytest.raises(ValueError, match="sum to 1"):
        FusedDetector(plain.members, 0.9, {"logmel": 0.9, "aisfx": 0.3})


def test_build_factory_model_validates_weights_and_keeps_every_clip_in_the_banks(tmp_path):
    # Prepare
    synth = SynthConfig(machines=("fan", "valve"), seconds=0.5, train_source=8, train_target=3, test_per_domain=2)
    generate(dataclasses.replace(synth, seed=2), tmp_path / "data")
    cfg = with_overrides(RunConfig(), "model", checkpoint="none", preset="tiny")
    cfg = with_overrides(cfg, "data", seconds=0.5)
    cfg = with_overrides(cfg, "partition", factories="plant=fan+valve")
    cfg = with_overrides(cfg, "detect", features="fusion", member_weights="validated")
    data = load_all(
        discover_clips(tmp_path / "data"), parse_factories(cfg.partition.factories, ["fan", "valve"]), cfg.data
    )
    encoder, _ = initial_encoder(cfg.model, seed=0)
    # Execute
    model = build_factory_model(data[0], encoder, cfg, TrainedHead(), {})
    again = build_factory_model(data[0], encoder, cfg, TrainedHead(), {})
    equal = build_factory_model(
        data[0], encoder, with_overrides(cfg, "detect", member_weights="equal"), TrainedHead(), {}
    )
    summary = ModeResult.of_factories("local", [FactoryResult(model, score_factory(model, data[0]))], {}).summary()
    # Assert
    assert sorted(model.detectors) == ["fan/00", "valve/00"]
    assert summary["member_weights"] == {key: det.weights for key, det in model.detectors.items()}
    for key, det in model.detectors.items():
        assert set(det.weights) == {"learned", "logmel"} and sum(det.weights.values()) == pytest.approx(1.0)
        assert all(w >= 0 for w in det.weights.values())
        assert det.weights == again.detectors[key].weights  # seeded: the same split and pseudo-anomalies
        assert {name: len(b) for name, b in det.members["logmel"].banks.items()} == {"source": 8, "target": 3}
        assert equal.detectors[key].weights is None
