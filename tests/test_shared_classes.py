"""[train] class_table = "shared": one-unit factories classify among all the partition's units."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coopasd.config.settings import load_config
from coopasd.data.dataset import load_all
from coopasd.data.families import generate_plant, plant_config
from coopasd.data.layout import discover_clips
from coopasd.data.partition import factories_of
from coopasd.errors import ConfigError
from coopasd.learn.participant import train_encoder
from coopasd.learn.shared_classes import fix_centres, partition_classes, shared_labels
from coopasd.learn.train import make_head
from coopasd.model.beats import BEATs
from tests.test_beats import MICRO

SPEC = "a=fan/00;b=fan/01"


@pytest.fixture(scope="module")
def plant(tmp_path_factory):
    root = tmp_path_factory.mktemp("units") / "plant"
    cfg = plant_config("dev", ("fan",), seconds=0.3, units=2, train_source=4, train_target=1, test_per_domain=2)
    generate_plant(cfg, root, None)
    return root


def test_classes_are_the_partition_members_and_clips_map_to_their_unit(plant):
    assert partition_classes("north=pump/00+fan; south=pump/01") == ["pump/00", "fan", "pump/01"]
    clips = [c for c in discover_clips(plant) if c.split == "train"]
    labels = shared_labels(clips, ["fan/01", "fan/00"])
    assert all(lab == (1 if c.section == "00" else 0) for c, lab in zip(clips, labels, strict=True))
    assert set(shared_labels(clips, ["fan"])) == {0}  # a whole machine type is one class
    with pytest.raises(ConfigError, match="fan/01 is not in"):
        shared_labels(clips, ["fan/00"])


def test_a_shared_table_needs_a_partition():
    with pytest.raises(ConfigError, match='class_table = "shared" classifies among the units'):
        load_config(None, train={"class_table": "shared"})


def test_a_lone_unit_trains_against_fixed_centres_of_every_unit(plant):
    cfg = load_config(
        None,
        partition={"factories": SPEC},
        train={"class_table": "shared", "epochs": 1, "batch_size": 8, "crop_seconds": 0.3},
        data={"seconds": 0.3},
        model={"pooling": "mean", "layer": -1},
    )
    clips = discover_clips(plant)
    lone = load_all(clips, factories_of(SPEC, ((c.machine_type, c.section) for c in clips)), cfg.data)[1]
    encoder = BEATs(MICRO)
    head = train_encoder(encoder, [lone], cfg)  # local-only: factory b alone, one unit of its own
    assert head.classes == ["fan/00", "fan/01"]
    fresh = make_head(encoder, 2, cfg.train, cfg.model.pooling)
    fix_centres(fresh, cfg.train.seed)
    trained = head.state["weight"]
    assert torch.equal(trained, fresh.weight.detach())  # fixed: not trained, the same in every factory
    assert np.allclose((trained @ trained.T).numpy(), np.eye(len(trained)), atol=1e-5)  # orthonormal centres
