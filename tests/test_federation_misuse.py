"""Federated runs that cannot do what they claim fail up front or end non-zero with one line (issue #16, 8 and 10)."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from coopasd.config.settings import FederationConfig, RunConfig, load_run_config, with_overrides
from coopasd.errors import ConfigError
from coopasd.federation.strategy import make_strategy
from tests.helpers import make_tree
from tests.test_robust import _reply


def _float_keys() -> list[tuple[str, str]]:
    """Every float setting of every section: (section, key)."""
    keys = []
    for section, cls in typing.get_type_hints(RunConfig).items():
        hints = typing.get_type_hints(cls)
        keys += [(section, f.name) for f in dataclasses.fields(cls) if hints[f.name] is float]
    return keys


FLOAT_KEYS = _float_keys()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
@pytest.mark.parametrize(("section", "key"), FLOAT_KEYS)
def test_a_non_finite_setting_is_refused_naming_the_file_and_key(tmp_path, section, key, value):
    path = tmp_path / "c.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_run_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: [{section}] {key} = ") and "finite" in message and "\n" not in message


def test_the_privacy_settings_of_the_issue_are_among_the_checked_keys():
    assert {("privacy", "dp_noise_multiplier"), ("privacy", "secagg_range"), ("privacy", "dp_clip")} <= set(FLOAT_KEYS)
    with pytest.raises(ConfigError, match=r"\[privacy\] secagg_range = inf"):
        with_overrides(RunConfig(), "privacy", secagg_range=float("inf"))


@pytest.mark.parametrize(("n", "max_hostile"), [(2, 0), (3, 1), (4, 1), (5, 2), (6, 2)])
def test_krum_is_refused_where_it_cannot_hold(n, max_hostile):
    cfg = FederationConfig(aggregation="krum", max_hostile=max_hostile)
    with pytest.raises(ConfigError) as caught:
        make_strategy(cfg, n)
    assert f"max_hostile = {max_hostile} needs more than 2f + 2 = {2 * max_hostile + 2}" in str(caught.value)
    assert f"this federation has {n}" in str(caught.value)
    make_strategy(cfg, 2 * max_hostile + 3)  # the smallest federation where it holds


def _one_machine(tmp_path: Path, *machines: str) -> Path:
    return make_tree(tmp_path / "data", machines=machines, train_source=2, train_target=1, test_per_domain=2)


@pytest.mark.parametrize(
    ("machines", "section", "values", "message"),
    [
        (("fan",), "privacy", {"secure_aggregation": True}, "secure_aggregation = true needs at least 2 factories"),
        (("fan", "valve", "gearbox"), "federation", {"aggregation": "krum"}, "this federation has 3"),
    ],
)
def test_a_federation_too_small_for_its_settings_stops_before_any_round(tmp_path, machines, section, values, message):
    from coopasd.federation.simulation import run_simulated

    cfg = with_overrides(RunConfig(), "federation", min_participants=1, aggregation="mean")
    cfg = with_overrides(cfg, section, **values)
    with pytest.raises(ConfigError, match=message):
        run_simulated(cfg, _one_machine(tmp_path, *machines), tmp_path / "run")
    assert not (tmp_path / "run").exists()


class _NaNGrid:
    """Two nodes that answer every train message with NaN parameters."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def get_node_ids(self) -> list[int]:
        return [1, 2]

    def send_and_receive(self, messages, timeout=None) -> list[Message]:
        self.sent += [m.metadata.message_type for m in messages]
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            received = msg.content["arrays"].to_torch_state_dict()
            params = {k: torch.full_like(v, float("nan")) for k, v in received.items()}
            values = {"num-examples": 10, "train-loss": 1.0, "train-accuracy": 0.5, "train-seconds": 1.0}
            info = ConfigRecord({"factory": f"f{node}", "received-hash": "0123456789abcdef"})
            content = RecordDict({"arrays": ArrayRecord(params), "metrics": MetricRecord(values), "info": info})
            replies.append(_reply(content, node))
        return replies


def test_a_run_in_which_no_round_was_aggregated_fails_and_says_why(tmp_path, monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    from coopasd.federation.server_app import ServerSettings, run_server

    for attr in ("_run_id", "_node_id", "_task_id"):  # what a running ServerApp has set
        monkeypatch.setattr(TaskIdentity, attr, 1)
    cfg = with_overrides(RunConfig(), "model", checkpoint="none", lora_rank=1)
    cfg = with_overrides(cfg, "federation", rounds=2, evaluate_every=0, share="lora")
    grid = _NaNGrid()
    result = run_server(grid, ServerSettings(cfg, tmp_path, 2))  # type: ignore[arg-type]
    assert MessageType.EVALUATE not in grid.sent  # nothing learned together: no final scoring
    error = result["error"]
    assert error.startswith("no round was aggregated") and "\n" not in error
    assert "rounds 1, 2: only 0 of 2 factories sent a valid update (minimum 2)" in error
    assert "f1: update: " in error and "non-finite values" in error
    assert "official_score" not in result
    assert json.loads((tmp_path / "federation.json").read_text())["error"] == error
