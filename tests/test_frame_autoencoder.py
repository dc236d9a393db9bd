"""The frame autoencoder member ``ae``: it learns normal frames (perturbed clips reconstruct worse), trains
for the same steps whatever the number of clips, keeps each factory's input scaling at the factory,
travels with the encoder in a federation, and survives saving (its exports: tests/test_export.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from coopasd.config.settings import RunConfig, with_overrides
from coopasd.data.augment import PSEUDO_ANOMALIES, pseudo_anomaly
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.detect.detectors import FactoryModel
from coopasd.errors import ConfigError
from coopasd.federation.records import shared_keys
from coopasd.learn.autoencoder import train_frame_autoencoder
from coopasd.learn.participant import build_factory_model, train_encoder
from coopasd.model.encoders import initial_encoder
from coopasd.model.frame_autoencoder import FrameAutoencoder, carried_autoencoder
from coopasd.rundir.writer import save_model
from tests.helpers import make_tree

RATE = 16_000


def machine_clips(n: int, seed: int, seconds: float = 0.5) -> np.ndarray:
    """``(n, samples)`` clips of one machine: a 300 Hz hum with harmonics, random phase and level, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    clips = []
    for _ in range(n):
        phase, level = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.3)
        hum = sum(np.sin(2 * np.pi * 300 * h * t + phase * h) / h for h in (1, 2, 3))
        clips.append(level * hum + 0.01 * rng.standard_normal(t.size))
    return np.stack(clips).astype(np.float32)


def perturbed(clips: np.ndarray, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    kinds = [PSEUDO_ANOMALIES[i % len(PSEUDO_ANOMALIES)] for i in range(len(clips))]
    return np.stack([pseudo_anomaly(torch.from_numpy(c), k, gen).numpy() for c, k in zip(clips, kinds, strict=True)])


def test_after_training_perturbed_clips_reconstruct_worse_than_unseen_normal_ones():
    ae = FrameAutoencoder()
    train, normal = machine_clips(12, seed=0), machine_clips(8, seed=1)
    losses = train_frame_autoencoder(ae, train, epochs=4, seed=0, device="cpu")
    assert len(losses) == 4 and losses[-1] < 0.9 * losses[0]
    normal_error = ae.clip_features(normal)[:, 0]
    anomalous_error = ae.clip_features(perturbed(normal, seed=2))[:, 0]
    assert normal_error.shape == (8,) and np.isfinite(normal_error).all()
    assert anomalous_error.min() > np.median(normal_error)  # every perturbed clip is above the typical normal one
    assert anomalous_error.mean() > normal_error.max()


def test_training_takes_the_same_steps_for_few_and_many_clips_and_is_reproducible(monkeypatch):
    steps = []
    original = torch.optim.Adam.step

    def counting(self, *args, **kwargs):
        steps[-1] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    few, many = machine_clips(3, seed=0), machine_clips(30, seed=0)
    for clips in (few, many):
        steps.append(0)
        train_frame_autoencoder(FrameAutoencoder(), clips, epochs=2, seed=0, device="cpu")
    assert steps[0] == steps[1] > 0
    a, b = FrameAutoencoder(), FrameAutoencoder()
    b.load_state_dict(a.state_dict())
    train_frame_autoencoder(a, few, epochs=1, seed=5, device="cpu")
    train_frame_autoencoder(b, few, epochs=1, seed=5, device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_the_input_scaling_is_fitted_once_and_never_crosses_the_wire():
    encoder, origin = initial_encoder(with_overrides(RunConfig(), "model", checkpoint="none").model, autoencoder=True)
    assert "frame autoencoder" in origin
    ae = carried_autoencoder(encoder)
    assert ae is not None
    train_frame_autoencoder(ae, machine_clips(4, seed=0), epochs=1, seed=0, device="cpu")
    mean = ae.mean.clone()
    train_frame_autoencoder(ae, 3 * machine_clips(4, seed=9), epochs=1, seed=0, device="cpu")
    assert torch.equal(ae.mean, mean)  # later rounds keep the first clips' scaling
    for share in ("encoder", "no_norm"):
        keys = shared_keys(encoder, share)
        assert "frame_ae.net.0.weight" in keys
        assert not {"frame_ae.mean", "frame_ae.std", "frame_ae.fitted"} & set(keys)
    assert torch.equal(start_weights(global_seed=1), start_weights(global_seed=2))  # the run seed's, not torch's


def start_weights(global_seed: int) -> torch.Tensor:
    torch.manual_seed(global_seed)
    encoder, _ = initial_encoder(with_overrides(RunConfig(), "model", checkpoint="none").model, 0, autoencoder=True)
    ae = carried_autoencoder(encoder)
    assert ae is not None
    return ae.net[0].weight.detach().clone()


def test_an_ae_member_needs_training():
    with pytest.raises(ConfigError, match=r"'ae'.*epochs = 0"):
        with_overrides(with_overrides(RunConfig(), "detect", features="logmel+ae"), "train", epochs=0)


@pytest.fixture(scope="module")
def plant(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("ae") / "data", train_source=6, train_target=2, test_per_domain=4)


def test_a_factory_model_with_the_ae_member_trains_it_apart_and_saves_it(plant, tmp_path):
    cfg = with_overrides(RunConfig(), "model", checkpoint="none")
    cfg = with_overrides(cfg, "detect", features="learned+logmel+ae")
    cfg = with_overrides(cfg, "train", epochs=1)
    machines = sorted(p.name for p in plant.iterdir() if p.is_dir())
    data = load_all(discover_clips(plant), parse_factories("", machines), cfg.data)[0]
    encoder, _ = initial_encoder(cfg.model, cfg.train.seed, autoencoder=True)
    ae = carried_autoencoder(encoder)
    assert ae is not None
    untouched = {k: v.clone() for k, v in encoder.state_dict().items()}
    head = train_encoder(encoder, [data], cfg)
    moved = {k for k, v in encoder.state_dict().items() if not torch.equal(v, untouched[k])}
    assert {k for k in moved if k.startswith("frame_ae.")} >= {"frame_ae.net.0.weight", "frame_ae.mean"}
    assert {k for k in moved if not k.startswith("frame_ae.")}  # the encoder trained too, with its own optimizer
    model = build_factory_model(data, encoder, cfg, head, {"mode": "test"})
    assert all(set(det.members) == {"learned", "logmel", "ae"} for det in model.detectors.values())
    path = save_model(tmp_path / "plant.pt", model)
    loaded = FactoryModel.load(path)
    loaded_ae = carried_autoencoder(loaded.encoder)
    assert loaded_ae is not None and torch.equal(loaded_ae.mean, ae.mean)
    section = next(iter(model.detectors))
    machine, sec = section.split("/")
    waves = data.test_waves[[c.machine_type == machine and c.section == sec for c in data.test_clips]]
    assert np.allclose(model.score(waves, machine, sec)[0], loaded.score(waves, machine, sec)[0], atol=1e-6)


def test_a_federation_shares_the_autoencoder_weights_but_not_the_factories_scaling(plant, tmp_path):
    from coopasd.federation.checkpoint import GlobalCheckpoint
    from coopasd.federation.simulation import run_simulated

    cfg = with_overrides(RunConfig(), "model", checkpoint="none")
    cfg = with_overrides(cfg, "detect", features="logmel+ae")
    cfg = with_overrides(cfg, "federation", rounds=2, local_epochs=1, evaluate_every=0, personalize_epochs=0)
    result, factories = run_simulated(cfg, plant, tmp_path / "run")
    assert np.isfinite(result["official_score"]) and len(factories) == 2
    params = GlobalCheckpoint.load(tmp_path / "run" / "checkpoints" / "latest.pt").params
    assert "frame_ae.net.0.weight" in params and "frame_ae.mean" not in params
    start, _ = initial_encoder(cfg.model, cfg.train.seed, autoencoder=True)
    assert not torch.equal(params["frame_ae.net.0.weight"], start.state_dict()["frame_ae.net.0.weight"])
    models = [FactoryModel.load(tmp_path / "run" / "factories" / f.name / "model.pt") for f in factories]
    aes = [carried_autoencoder(m.encoder) for m in models]
    assert all(ae is not None for ae in aes)
    a, b = aes  # the aggregated weights, each factory's own scaling
    assert torch.equal(a.net[0].weight, params["frame_ae.net.0.weight"].to(a.net[0].weight.dtype))
    assert torch.equal(a.net[0].weight, b.net[0].weight)
    assert not torch.equal(a.mean, b.mean)
