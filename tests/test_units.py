"""Plants with several units per machine type (sections 00..NN) and factories that hold units."""

from __future__ import annotations

import numpy as np
import pytest

from coopasd.config.settings import DataConfig, load_config
from coopasd.data.dataset import load_all
from coopasd.data.families import generate_plant, plant_config, render_plant_clip
from coopasd.data.features import logmel_statistics
from coopasd.data.layout import discover_clips
from coopasd.data.partition import factories_of
from coopasd.errors import ConfigError
from coopasd.experiment.pipeline import run_learned_mode

UNITS = [("pump", "00"), ("pump", "01"), ("pump", "02"), ("fan", "00"), ("fan", "01")]


@pytest.mark.parametrize(("family", "machine"), [("dev", "valve"), ("unseen", "press")])
def test_units_are_sections_with_their_own_timbre_and_unit_00_is_unchanged(family, machine):
    one = plant_config(family, (machine,), seconds=0.5)
    three = plant_config(family, (machine,), seconds=0.5, units=3)
    base = render_plant_clip(one, machine, "train", "source", "normal", 3)[0]
    assert np.array_equal(base, render_plant_clip(three, machine, "train", "source", "normal", 3)[0])
    # which unit a clip comes from is learnable: leave-one-out 1-NN on log-mel statistics (chance: 1/3)
    feats, units = [], []
    for section in ("00", "01", "02"):
        cfg = plant_config(family, (machine,), seconds=0.5, section=section)
        for i in range(6):
            wave = render_plant_clip(cfg, machine, "train", "source", "normal", i)[0]
            feats.append(logmel_statistics(wave[None])[0])
            units.append(section)
    x = np.array(feats)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1) + np.diag(np.full(len(x), np.inf))
    assert np.mean(np.array(units)[dist.argmin(1)] == np.array(units)) >= 0.75


@pytest.mark.parametrize("family", ["dev", "unseen"])
def test_a_multi_unit_tree_without_attributes_is_read_back_section_by_section(tmp_path, family):
    machine = "fan" if family == "dev" else "motor"
    cfg = plant_config(
        family, (machine,), seconds=0.2, units=3, train_source=3, train_target=1, test_per_domain=2, attributes=False
    )
    summary = generate_plant(cfg, tmp_path / "plant")
    clips = discover_clips(tmp_path / "plant")
    assert sorted({c.section for c in clips}) == ["00", "01", "02"]
    assert summary.counts[machine] == {"train": 12, "test": 12}
    assert all(c.attributes == () for c in clips)
    assert (tmp_path / "plant" / machine / "attributes_02.csv").is_file()


def test_units_beyond_two_digits_are_refused():
    with pytest.raises(ConfigError, match="units must lie in"):
        plant_config("dev", ("fan",), section="98", units=3)
    with pytest.raises(ConfigError, match="units must lie in"):
        plant_config("unseen", ("motor",), units=0)


def test_factories_by_unit():
    two = factories_of("north=pump/00+fan/01;south=pump/02+pump/01+fan/00", UNITS)
    assert [(f.name, f.units) for f in two] == [
        ("north", ("pump/00", "fan/01")),
        ("south", ("pump/02", "pump/01", "fan/00")),
    ]
    north, south = two
    assert north.holds("pump", "00") and not north.holds("pump", "01") and south.holds("fan", "00")
    whole = factories_of("north=pump+fan/01;south=fan/00", UNITS)[0]
    assert all(whole.holds("pump", s) for s in ("00", "01", "02")) and not whole.holds("fan", "00")
    assert [f.units for f in factories_of("", UNITS)] == [(), ()]  # one factory per machine type, every unit


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a=pump/09+pump+fan", "unknown unit 'pump/09' \\(pump has units: pump/00, pump/01, pump/02\\)"),
        ("a=pump/00+fan;b=pump/00+pump/01+pump/02", "unit 'pump/00' is assigned to both 'a' and 'b'"),
        ("a=pump;b=pump/01+fan", "unit 'pump/01' is assigned to both 'a' and 'b'"),
        ("a=pump/00+pump/01+fan", "unit\\(s\\) pump/02 belong to no factory"),
        ("a=fan;a=pump", "factory name 'a' is given twice"),
    ],
)
def test_unit_partition_errors_name_the_unit(spec, message):
    with pytest.raises(ConfigError, match=message):
        factories_of(spec, UNITS)


def test_a_deployed_node_may_name_units_and_whole_machine_types():
    from flwr.app import Context, RecordDict

    from coopasd.federation.client_app import settings_from_context

    run_config = {"run-config": "", "run-dir": "srv", "factories": 2, "resume": False}
    node_config = {"data-dir": "/plant/data", "machines": "pump+fan/01", "factory": "x"}
    context = Context(run_id=7, node_id=1, node_config=node_config, state=RecordDict(), run_config=run_config)
    node = settings_from_context(context).factory
    assert node.holds("pump", "02") and node.holds("fan", "01") and not node.holds("fan", "00")


def test_a_factory_loads_only_its_own_units(tmp_path):
    cfg = plant_config("dev", ("fan",), seconds=0.2, units=2, train_source=2, train_target=1, test_per_domain=2)
    generate_plant(cfg, tmp_path / "plant")
    clips = discover_clips(tmp_path / "plant")
    factories = factories_of("a=fan/00;b=fan/01", ((c.machine_type, c.section) for c in clips))
    a, b = load_all(clips, factories, DataConfig(seconds=0.2))
    assert {c.section for c in a.train_clips + a.test_clips} == {"00"}
    assert {c.section for c in b.train_clips + b.test_clips} == {"01"}
    assert len(a.train_clips) == 3 and len(b.test_clips) == 4


def test_a_run_records_which_units_each_factory_holds(tmp_path):
    plant = tmp_path / "plant"
    generate_plant(
        plant_config("dev", ("fan",), seconds=0.2, units=2, train_source=3, train_target=1, test_per_domain=4), plant
    )
    cfg = load_config(None, partition={"factories": "a=fan/00;b=fan/01"}, detect={"features": "logmel"})
    summary = run_learned_mode("local", plant, cfg).summary()
    assert summary["factory_units"] == {"a": ["fan/00"], "b": ["fan/01"]}
    assert sorted(summary["machines"]["fan"]["sections"]) == ["00", "01"]
