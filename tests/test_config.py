from __future__ import annotations

import pytest

from coopasd.config.settings import (
    SAMPLE_RATE,
    RunConfig,
    failing_rounds,
    load_config,
    load_run_config,
    to_toml,
    with_overrides,
)
from coopasd.errors import ConfigError


def test_round_trip_through_toml(tmp_path):
    cfg = with_overrides(RunConfig(), "baseline", k=3)
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_run_config(path) == cfg


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[baseline]\nkk = 3\n")
    with pytest.raises(ConfigError, match="unknown key.*kk"):
        load_run_config(path)


def test_wrong_type_and_bad_choice_are_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[baseline]\nk = 'three'\n")
    with pytest.raises(ConfigError, match="expected int"):
        load_run_config(path)
    path.write_text("[data]\non_error = 'ignore'\n")
    with pytest.raises(ConfigError, match="expected one of"):
        load_run_config(path)


def test_int_is_accepted_for_float_and_missing_file_is_named(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[data]\nseconds = 3\n")
    assert load_run_config(path).data.seconds == 3.0
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "missing.toml")


def test_flags_land_on_top_of_the_file_and_unset_flags_are_ignored(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nepochs = 4\nlr = 0.001\n[federation]\nrounds = 7\n")
    cfg = load_config(path, train={"epochs": 2, "batch_size": None}, federation={"rounds": None})
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size, cfg.federation.rounds) == (2, 0.001, 16, 7)
    assert load_config(None) == RunConfig()
    with pytest.raises(ConfigError, match="unknown config section"):
        load_config(None, trian={"epochs": 1})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, train={"epoch": 1})


def test_fault_drill_rounds_per_factory():
    spec = "fan:1+2; valve:3;fan:5"
    assert failing_rounds(spec, "fan") == {1, 2, 5}
    assert failing_rounds(spec, "valve") == {3}
    assert failing_rounds(spec, "gearbox") == set() and failing_rounds("", "fan") == set()


def test_the_sample_rate_is_written_once():
    from coopasd.data.features import FbankConfig
    from coopasd.data.synth import SynthConfig

    assert RunConfig().data.sample_rate == FbankConfig().sample_rate == SynthConfig().sample_rate == SAMPLE_RATE
