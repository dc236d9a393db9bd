from __future__ import annotations

import pytest

from coopasd.config import RunConfig, load_run_config, to_toml, with_overrides
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
