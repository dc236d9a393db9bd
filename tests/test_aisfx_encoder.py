"""The aiSFX CNN as a trainable, federated backbone ([model] backbone = "aisfx")."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from coopasd.config.settings import load_config
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.detect.detectors import FactoryModel
from coopasd.errors import ConfigError
from coopasd.federation.records import apply_shared, from_record, shared_keys, to_record
from coopasd.learn.participant import finish, train_encoder, train_round
from coopasd.model.aisfx import DEFAULT_WEIGHTS, load_aisfx
from coopasd.model.encoders import initial_encoder

SPLIT = "north=fan;south=valve"


def _datas(tree, cfg):
    factories = parse_factories(cfg.partition.factories, ["fan", "valve"])
    return load_all(discover_clips(tree), factories, cfg.data)


def _cfg(**train):
    return load_config(
        None,
        model={"backbone": "aisfx"},
        train={"epochs": 3, "batch_size": 8, "lr": 1e-3, "crop_seconds": 0.0, "device": "cpu", **train},
        detect={"features": "learned+logmel"},
        partition={"factories": SPLIT},
    )


def test_tuned_aisfx_starts_as_the_frozen_one_and_its_loss_goes_down(tiny_tree):
    # Prepare: two factories' 0.5 s clips pooled (centralized), the shipped weights as the start
    cfg = _cfg()
    datas = _datas(tiny_tree, cfg)
    encoder, _ = initial_encoder(cfg.model)
    waves = torch.as_tensor(datas[0].train_waves[:3])
    assert torch.allclose(encoder(waves), load_aisfx(DEFAULT_WEIGHTS)(waves), atol=1e-5)
    frozen_before = copy.deepcopy(encoder.frozen.state_dict())
    # Execute
    head = train_encoder(encoder, datas, cfg)
    # Assert: the auxiliary loss falls, the frozen front-end and lower blocks do not move
    losses = [h.loss for h in head.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert all(torch.equal(v, encoder.frozen.state_dict()[k]) for k, v in frozen_before.items())


def test_federated_rounds_send_only_the_trainable_aisfx_tensors(tiny_tree):
    # Prepare: the server's view (initial encoder, shared keys) and one factory's round
    cfg = _cfg(epochs=1)
    server, _ = initial_encoder(cfg.model)
    keys = shared_keys(server, cfg.federation.share)
    trainable = [n for n, p in server.named_parameters() if p.requires_grad]
    client, _ = initial_encoder(cfg.model)
    data = _datas(tiny_tree, cfg)[0]
    record = to_record(server, keys)
    # Execute: a federated round from the global parameters, then the reply's arrays
    train_round(client, data, cfg, 1, 1.0, 0.0, None, from_record(record))
    reply = from_record(to_record(client, keys))
    # Assert: exactly the top block's conv weights and BN scales/shifts travel (no statistics, no lower blocks)
    assert keys == trainable and set(reply) == set(keys)
    assert all(k.startswith("blocks.3.") for k in keys) and len(keys) == 6
    assert all(v.is_floating_point() for v in reply.values())
    assert any(not torch.equal(reply[k], server.state_dict()[k]) for k in keys)  # the round trained them
    apply_shared(server, reply)
    assert all(torch.equal(server.state_dict()[k], reply[k]) for k in keys)


def test_a_saved_factory_model_with_the_tuned_aisfx_scores_the_same_after_load(tmp_path, tiny_tree):
    # Prepare: one factory trained locally and its detector built
    cfg = _cfg(epochs=1)
    data = _datas(tiny_tree, cfg)[1]
    encoder, _ = initial_encoder(cfg.model)
    head = train_encoder(encoder, [data], cfg)
    model = finish(data, encoder, cfg, head, {"mode": "local"}).model
    path = tmp_path / "south.pt"
    path.write_bytes(model.to_bytes())
    # Execute
    loaded = FactoryModel.load(path)
    # Assert: the file holds the trainable blocks only, and the loaded model scores identically
    assert loaded.model_cfg.backbone == "aisfx" and set(loaded.encoder.state_dict()) == set(encoder.state_dict())
    waves = data.test_waves[:4]
    before, _ = model.score(waves, "valve", "00")
    after, _ = loaded.score(waves, "valve", "00")
    assert np.allclose(before, after, rtol=1e-5)
    start, _ = initial_encoder(cfg.model)
    assert any(not torch.equal(v, start.state_dict()[k]) for k, v in loaded.encoder.state_dict().items())


def test_aisfx_backbone_takes_no_lora():
    with pytest.raises(ConfigError, match="lora_rank"):
        load_config(None, model={"backbone": "aisfx", "lora_rank": 8})
