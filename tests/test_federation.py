from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.serverapp.strategy import FedAdam, FedAvgM

from coopasd.config.settings import FederationConfig, RunConfig, to_toml, with_overrides
from coopasd.dcase.results import ModeResult
from coopasd.errors import CoopasdError
from coopasd.federation.checkpoint import GlobalCheckpoint, params_hash
from coopasd.federation.records import apply_shared, from_record, shared_keys, to_record
from coopasd.federation.strategy import make_strategy, restore_strategy_state, strategy_state
from coopasd.model.beats import BEATs
from coopasd.report.run_report import write_run
from tests.helpers import make_tree
from tests.helpers.sockets import listening
from tests.test_beats import MICRO


@pytest.fixture(scope="module")
def three_factories(tmp_path_factory) -> Path:
    return make_tree(
        tmp_path_factory.mktemp("fed") / "data",
        machines=("fan", "valve", "gearbox"),
        train_source=6,
        train_target=2,
        test_per_domain=6,
    )


def _fed_config(**federation) -> RunConfig:
    cfg = with_overrides(RunConfig(), "model", checkpoint="none")
    return with_overrides(cfg, "federation", **({"rounds": 2, "local_epochs": 1} | federation))


def test_shared_keys_per_mode():
    enc = BEATs(MICRO)
    full = shared_keys(enc, "encoder")
    no_norm = shared_keys(enc, "no_norm")
    assert full == list(enc.state_dict())
    assert set(full) - set(no_norm) == {k for k in full if "layer_norm" in k}
    with pytest.raises(ValueError, match="lora_rank"):
        shared_keys(enc, "lora")
    enc.add_lora(2)
    lora = shared_keys(enc, "lora")
    assert lora and all(".lora_" in k for k in lora)


def test_apply_shared_overwrites_only_what_travels():
    a, b = BEATs(MICRO), BEATs(MICRO)
    keys = shared_keys(a, "no_norm")
    before = {k: v.clone() for k, v in b.state_dict().items()}
    apply_shared(b, from_record(to_record(a, keys)))
    after = b.state_dict()
    assert all(torch.equal(after[k], a.state_dict()[k]) for k in keys)
    assert all(torch.equal(after[k], before[k]) for k in after if k not in keys)
    with pytest.raises(KeyError, match="does not have"):
        apply_shared(b, {"nope.weight": torch.zeros(1)})


@pytest.mark.parametrize("name", ["fedavgm", "fedadam"])
def test_strategy_state_survives_a_checkpoint(tmp_path, name):
    strategy = make_strategy(FederationConfig(strategy=name), 3)
    if isinstance(strategy, FedAvgM):
        strategy.momentum_vector = [np.ones((2, 2)), np.arange(3.0)]
    if isinstance(strategy, FedAdam):
        strategy.m_t, strategy.v_t = {"w": np.ones(3)}, {"w": np.full(3, 2.0)}
    params = {"w": torch.randn(3)}
    GlobalCheckpoint(4, params, strategy_state(strategy), to_toml(RunConfig()), [{"round": 4}]).save(tmp_path)
    loaded = GlobalCheckpoint.load(tmp_path / "latest.pt")
    fresh = make_strategy(FederationConfig(strategy=name), 3)
    restore_strategy_state(fresh, loaded.strategy_state)
    assert loaded.round == 4 and torch.equal(loaded.params["w"], params["w"])
    if isinstance(fresh, FedAvgM):
        assert np.array_equal(fresh.momentum_vector[1], np.arange(3.0))
    if isinstance(fresh, FedAdam):
        assert np.array_equal(fresh.v_t["w"], np.full(3, 2.0))
    assert (tmp_path / "round_004.pt").exists()


def test_corrupt_global_checkpoint_is_detected(tmp_path):
    GlobalCheckpoint(1, {"w": torch.ones(4)}, {}, "", []).save(tmp_path)
    payload = torch.load(tmp_path / "latest.pt", weights_only=True)
    payload["params"]["w"][0] = 5.0
    torch.save(payload, tmp_path / "latest.pt")
    with pytest.raises(CoopasdError, match="hash mismatch"):
        GlobalCheckpoint.load(tmp_path / "latest.pt")


def test_dropouts_do_not_stop_rounds_and_rejoiners_get_the_current_model(tmp_path, three_factories, capfd, caplog):
    from coopasd.federation.simulation import run_simulated

    # round 1: fan fails (2 of 3 answer: aggregated); round 2: fan and valve fail (1 < minimum 2:
    # global model kept); round 3: everyone is back and starts from the current global model
    cfg = _fed_config(rounds=3, min_participants=2, evaluate_every=0, drop_out="fan:1;valve:2;fan:2")
    sockets: list[tuple[str, int, int]] = []  # what the run's process tree (Ray's servers) listens on
    reported: list[dict] = []  # what the progress hook (the CLI's round lines) was given

    def on_round(entry: dict) -> None:
        sockets.extend(listening(os.getpid()))
        reported.append(dict(entry))

    with caplog.at_level("WARNING"):
        result, factories = run_simulated(cfg, three_factories, tmp_path / "run", on_round=on_round)
    # each failure is one line naming the factory and why; none of Flower's ~80-line Ray tracebacks
    failed = [m for m in caplog.messages if "failed this round" in m]
    assert len(failed) == 3 and all(m.endswith(": fault drill, dropping out of round " + m[-1]) for m in failed)
    assert "factory 'valve' (node " in failed[-1] or "factory 'fan' (node " in failed[-1]  # bound after round 1
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err + printed.out + "".join(caplog.messages)
    assert [e["round"] for e in reported] == [1, 2, 3]  # each round once, the last with the final score
    assert reported[-1]["official_score"] == result["official_score"]
    assert sockets and {host for host, _, _ in sockets} <= {"127.0.0.1", "::1"}, sockets
    r1, r2, r3 = result["rounds"]
    assert (r1["answered"], r1["aggregated"]) == (2, True) and set(r1["bytes_up"]) == {"valve", "gearbox"}
    assert (r2["answered"], r2["aggregated"]) == (1, False) and r2["global_hash"] == r1["global_hash"]
    assert r3["answered"] == 3 and r3["aggregated"]
    assert set(r3["received_hash"].values()) == {r1["global_hash"]}  # the rejoining fan got the current model
    assert set(result["machines"]) == {"fan", "valve", "gearbox"}
    # only parameters and metric values reached the server: no clip names in its result
    assert ".wav" not in json.dumps(result)
    # each factory keeps its head, scores and model on its own disk
    for name in ("fan", "valve", "gearbox"):
        own = tmp_path / "run" / "factories" / name
        assert (own / "model.pt").exists() and list((own / "submission").glob("anomaly_score_*.csv"))
    # the run directory is filled from the factories' own results by the writer of every mode; its
    # official score (from the scores) equals the one the server computed from metric values alone
    assert [f.name for f in factories] == ["fan", "gearbox", "valve"]
    mode = ModeResult.of_factories("federated", factories, {"rounds": result["rounds"]})
    summary = write_run(tmp_path / "out", mode, cfg, three_factories)
    assert summary is not None and summary["official_score"] == pytest.approx(result["official_score"], abs=1e-12)
    assert sorted(p.name for p in (tmp_path / "out" / "models").iterdir()) == ["fan.pt", "gearbox.pt", "valve.pt"]
    assert (tmp_path / "out" / "rounds.png").exists() and (tmp_path / "out" / "report.html").exists()


def _federate_cmd(data: Path, out: Path, config: Path, *extra: str) -> list[str]:
    exe = Path(sys.executable).with_name("coopasd")
    return [str(exe), "federate", "--data", str(data), "--out", str(out), "--config", str(config), *extra]


def test_resume_after_the_server_is_killed_gives_the_same_final_model(tmp_path, three_factories):
    from coopasd.federation.simulation import run_simulated

    cfg = _fed_config(rounds=2, evaluate_every=0)
    config = tmp_path / "run.toml"
    config.write_text(to_toml(cfg))
    reference, _ = run_simulated(cfg, three_factories, tmp_path / "uninterrupted")
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        _federate_cmd(three_factories, out, config),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (out / "checkpoints" / "latest.pt").exists():
        assert proc.poll() is None, "federate ended before writing its first checkpoint"
        assert time.time() < deadline, "no checkpoint after 5 minutes"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the server dies after round 1, mid-way through round 2
    proc.wait()
    assert not (out / "federation.json").exists()
    assert GlobalCheckpoint.load(out / "checkpoints" / "latest.pt").round == 1
    resumed, _ = run_simulated(cfg, three_factories, out, resume=True)
    assert [r["round"] for r in resumed["rounds"]] == [1, 2]
    assert resumed["final_hash"] == reference["final_hash"]
    ckpt = GlobalCheckpoint.load(out / "checkpoints" / "latest.pt")
    assert params_hash(ckpt.params) == reference["final_hash"]


def test_flowers_run_simulation_notice_is_dropped_and_its_other_warnings_are_kept():
    import logging

    from flwr.supercore.logger import warn_deprecated_feature

    from coopasd.federation.simulation import RunSimulationNotice, _quiet_flower

    # Prepare: a handler on flwr's logger sees what its console handler would print
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    flower = logging.getLogger("flwr")
    flower.addHandler(handler)
    try:
        _quiet_flower()
        _quiet_flower()  # twice, as two runs in one process would: still one filter
        # Execute: what flwr 1.42's run_simulation logs on every call, and another deprecation
        warn_deprecated_feature("The `run_simulation` function is deprecated and will be removed in a future version")
        warn_deprecated_feature("The `some_other_api` is going away")
    finally:
        flower.removeHandler(handler)
    # Assert
    assert len(seen) == 1 and "some_other_api" in seen[0]
    assert sum(isinstance(f, RunSimulationNotice) for f in flower.filters) == 1
