from __future__ import annotations

import numpy as np
import pytest
import torch

from coopasd.config.settings import ModelConfig, TrainConfig
from coopasd.data.augment import PSEUDO_ANOMALIES, pseudo_anomaly, spec_augment
from coopasd.errors import ConfigError
from coopasd.learn.train import TrainingSet, _epoch_indices, make_head, steps_per_run, train_local
from coopasd.model.beats import BEATs
from coopasd.model.embed import embed, pick_device
from coopasd.model.heads import ArcFace
from tests.test_beats import MICRO

MEAN_OF_LAST_LAYER = ModelConfig(pooling="mean", layer=-1)


def _toy_data(n_per_class=12, classes=3, seconds=0.5, seed=0):
    """Classes that differ by a tone frequency, with noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(16_000 * seconds)) / 16_000
    waves, labels = [], []
    for c in range(classes):
        for _ in range(n_per_class):
            f = 300 * (c + 1) * (1 + 0.02 * rng.normal())
            waves.append(0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.normal(size=t.size))
            labels.append(c)
    return np.array(waves, np.float32), np.array(labels)


def test_arcface_margin_lowers_the_true_class_logit_only():
    head = ArcFace(4, 3, margin=0.3, scale=10.0)
    emb = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 0, 1])
    with_margin = head(emb, labels)
    plain = head.scale * head.cosine(emb)
    true = torch.nn.functional.one_hot(labels, 3).bool()
    assert torch.allclose(with_margin[~true], plain[~true])
    assert (with_margin[true] < plain[true]).all()


def test_training_learns_a_separable_task_and_is_seeded():
    waves, labels = _toy_data()
    cfg = TrainConfig(
        epochs=10,
        batch_size=12,
        lr=3e-3,
        crop_seconds=0.0,
        pseudo_anomalies=False,
        spec_augment=False,
        target_fraction=0.0,
    )
    torch.manual_seed(0)
    enc = BEATs(MICRO)
    head = make_head(enc, 3, cfg, "mean")
    history = train_local(enc, head, TrainingSet(waves, labels, np.zeros(len(labels), bool)), MEAN_OF_LAST_LAYER, cfg)
    assert len(history) == 10
    assert history[-1].loss < history[0].loss
    assert history[-1].accuracy >= 0.8
    # the learned embedding separates the classes: nearest class centroid is right
    emb = embed(enc, waves)
    centroids = np.stack([emb[labels == c].mean(0) for c in range(3)])
    guess = np.argmin(((emb[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (guess == labels).mean() >= 0.9
    torch.manual_seed(0)
    enc2 = BEATs(MICRO)
    head2 = make_head(enc2, 3, cfg, "mean")
    history2 = train_local(
        enc2, head2, TrainingSet(waves, labels, np.zeros(len(labels), bool)), MEAN_OF_LAST_LAYER, cfg
    )
    assert [h.loss for h in history2] == pytest.approx([h.loss for h in history])


def test_target_clips_are_oversampled_to_the_asked_share():
    is_target = np.array([False] * 90 + [True] * 10)
    idx = _epoch_indices(is_target, 0.25, np.random.default_rng(0))
    share = is_target[idx].mean()
    assert share == pytest.approx(0.25, abs=0.01) and set(np.flatnonzero(is_target)) <= set(idx)
    assert len(idx) == 120  # 90 source + 30 target draws
    assert steps_per_run(100, 10, TrainConfig(epochs=2, batch_size=10, target_fraction=0.25)) == 2 * 12


def test_pseudo_anomalies_and_spec_augment_change_the_input():
    g = torch.Generator().manual_seed(0)
    wave = torch.from_numpy(_toy_data(1, 1)[0][0])
    for kind in PSEUDO_ANOMALIES:
        out = pseudo_anomaly(wave, kind, g)
        assert out.shape == wave.shape and torch.isfinite(out).all()
        assert (out - wave).abs().max() > 1e-3, kind
    with pytest.raises(ValueError):
        pseudo_anomaly(wave, "explosion", g)
    fb = torch.randn(2, 50, 128)
    masked = spec_augment(fb, g, 10, 10)
    assert masked.shape == fb.shape and not torch.equal(masked, fb)


def test_fedprox_term_keeps_weights_near_the_global_model():
    waves, labels = _toy_data(6, 2)
    drift = {}
    for mu in (0.0, 100.0):
        torch.manual_seed(0)
        enc = BEATs(MICRO)
        start = {k: v.clone() for k, v in enc.named_parameters()}
        cfg = TrainConfig(epochs=2, batch_size=6, lr=3e-3, crop_seconds=0.0, proximal_mu=mu, pseudo_anomalies=False)
        data = TrainingSet(waves, labels, np.zeros(12, bool))
        train_local(enc, make_head(enc, 2, cfg, "mean"), data, MEAN_OF_LAST_LAYER, cfg, global_params=start)
        drift[mu] = sum(float((p - start[k]).pow(2).sum()) for k, p in enc.named_parameters())
    assert drift[100.0] < drift[0.0]


def test_asking_for_cuda_without_one_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"
