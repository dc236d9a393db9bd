"""No silent stretches (issue #16, item 12): memory banks and scoring are announced, with their clip counts."""

from __future__ import annotations

import logging

from coopasd.config.settings import RunConfig, with_overrides
from coopasd.data.dataset import load_all
from coopasd.data.layout import discover_clips
from coopasd.data.partition import parse_factories
from coopasd.learn.participant import TrainedHead, finish
from coopasd.model.encoders import initial_encoder


def test_building_memory_banks_and_scoring_are_logged_with_their_clip_counts(tiny_tree, caplog):
    cfg = with_overrides(RunConfig(), "model", checkpoint="none")
    cfg = with_overrides(cfg, "detect", features="logmel")
    data = load_all(discover_clips(tiny_tree), parse_factories("", ["fan", "valve"]), cfg.data)[0]
    encoder, _ = initial_encoder(cfg.model, cfg.train.seed)
    with caplog.at_level(logging.INFO, logger="coopasd.learn.participant"):
        result = finish(data, encoder, cfg, TrainedHead(), {"mode": "local"})
    assert result.sections
    name, n_train, n_test = data.factory.name, len(data.train_clips), len(data.test_clips)
    lines = [r.getMessage() for r in caplog.records if r.name == "coopasd.learn.participant"]
    assert lines[0] == f"{name}: building memory banks from {n_train} normal training clips"
    assert lines[1].startswith(f"{name}: scoring {n_test} test clips (memory banks built in ") and len(lines) == 2
