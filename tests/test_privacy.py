"""[privacy]: SecAgg+ (the server learns only the sum), DP clipping + noise, and the accountant.

The SecAgg+ protocol runs without Ray through an in-process grid (Flower's own workflow and mod, our
server loop and ClientApps, every message deep-copied as if serialized); one test runs the Simulation
Engine (Ray) once, with SecAgg+ and distributed DP.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.supercore.task_identity import TaskIdentity
from scipy.optimize import brentq
from scipy.stats import norm

from coopasd.config.settings import PrivacyConfig, RunConfig, load_config, with_overrides
from coopasd.data.partition import parse_factories
from coopasd.errors import ConfigError
from coopasd.experiment.pipeline import run_federated
from coopasd.federation import privacy
from coopasd.federation.checkpoint import GlobalCheckpoint
from coopasd.federation.client_app import ClientSettings, make_client_app
from coopasd.federation.privacy import (
    SECAGG_MAX_WEIGHT,
    PrivacyServer,
    SecAggEncoding,
    add_noise,
    clip_update,
    clipped_params,
    epsilon_for,
    noise_multiplier_for,
    privacy_report,
    secure_exchange,
    secure_train,
    update_norm,
)
from coopasd.federation.server_app import ServerSettings, run_server
from coopasd.report.page import privacy_note
from coopasd.report.run_report import write_run
from tests.helpers import make_tree

NODES = (11, 22, 33)
COUNTS = {11: 8, 22: 16, 33: 40}  # training clips per factory (the weights)


@pytest.fixture
def task_identity(monkeypatch):
    """What a ServerApp process has: messages can only be created inside a run."""
    for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


class InProcessGrid:
    """A Grid that delivers each message (deep-copied, as serialization would) to a node's handler."""

    def __init__(self, handlers):
        self.handlers = handlers
        self.contexts = {n: Context(1, n, {}, RecordDict(), {}) for n in handlers}
        self.received: list[Message] = []  # every reply the server side got

    def get_node_ids(self):
        return list(self.handlers)

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            try:
                reply = self.handlers[node](copy.deepcopy(msg), self.contexts[node])
            except Exception as err:  # noqa: BLE001 - a failing node is an error reply, as in Flower
                reply = Message(Error(0, str(err)), reply_to=msg)
            replies.append(copy.deepcopy(reply))
        self.received += replies
        return replies


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": 0.1 * torch.randn(200, 30, generator=g), "b": 0.1 * torch.randn(30, generator=g)}


def _updates(scale: float) -> dict[int, dict[str, torch.Tensor]]:
    return {n: {k: scale * v for k, v in _state(n).items()} for n in NODES}


def _train_messages(global_state: dict[str, torch.Tensor]) -> list[Message]:
    content = RecordDict({"arrays": ArrayRecord(global_state), "config": ConfigRecord({"server-round": 1})})
    return [Message(copy.deepcopy(content), dst_node_id=n, message_type=MessageType.TRAIN) for n in NODES]


def _secure_grid(updates, cfg: PrivacyConfig) -> InProcessGrid:
    """Each factory 'trains' by adding its fixed update, then goes through our SecAgg+ client side."""

    def handler(node):
        def train(msg: Message) -> Message:
            received = msg.content["arrays"].to_torch_state_dict()
            local = {k: received[k] + updates[node][k] for k in received}
            metrics = MetricRecord({"num-examples": COUNTS[node], "train-loss": float(node)})
            info = ConfigRecord({"factory": f"f{node}", "received-hash": "h"})
            return Message(RecordDict({"arrays": ArrayRecord(local), "metrics": metrics, "info": info}), reply_to=msg)

        return lambda msg, context: secure_train(msg, context, train, cfg, seed=node)

    return InProcessGrid({n: handler(n) for n in NODES})


def test_clipping_and_noise_leave_integer_buffers_alone():
    # Prepare: an update of L2 norm 5 (3-4-0) and a state with an integer buffer
    update = {"a": torch.tensor([3.0, 4.0]), "b": torch.zeros(3)}
    local = {"a": torch.tensor([4.0, 6.0]), "steps": torch.tensor([7], dtype=torch.int64)}
    global_ = {"a": torch.tensor([1.0, 2.0]), "steps": torch.tensor([5], dtype=torch.int64)}
    # Execute
    clipped = clip_update(update, 1.0)
    unchanged = clip_update(update, 10.0)
    params = clipped_params(local, global_, 2.5)
    noisy = add_noise({"a": torch.zeros(4), "steps": torch.tensor([5])}, 1.0, privacy.noise_generator(0))
    # Assert
    assert update_norm(clipped) == pytest.approx(1.0) and torch.allclose(clipped["a"], torch.tensor([0.6, 0.8]))
    assert torch.equal(unchanged["a"], update["a"])
    assert torch.allclose(params["a"], torch.tensor([2.5, 4.0]))  # global + (3, 4) / 5 * 2.5
    assert torch.equal(params["steps"], local["steps"])
    assert torch.equal(noisy["steps"], torch.tensor([5])) and noisy["a"].abs().sum() > 0


def test_quantization_range_never_wraps_around_the_modulus():
    for n in (2, 3, 4, 7, 8, 15, 16, 100):
        q = SecAggEncoding(0.1, n).quantization_range
        assert n * q < 2**32 and q <= 2**30 and 2 * n * q >= 2**32 - 1  # the largest power of two that fits
    enc = SecAggEncoding(0.1, 3)
    values, beyond = enc.encode({"a": torch.tensor([0.05, -0.2, float("nan"), 0.0])}, ["a"])
    assert np.allclose(values[0], [4.0, -16.0, 0.0, 0.0]) and beyond == 0.25
    assert np.allclose(enc.decode(values)[0], [0.05, -0.2, 0.0, 0.0])


def test_secagg_gives_the_server_only_the_weighted_mean(task_identity):
    # Prepare: three factories with different updates and weights, SecAgg+ without DP
    global_state, updates = _state(0), _updates(0.01)
    cfg = PrivacyConfig(secure_aggregation=True)
    grid = _secure_grid(updates, cfg)
    # Execute
    replies = secure_exchange(grid, _train_messages(global_state), cfg, 3, None)
    # Assert: the weighted mean, within the stated quantization bound (+ float32 rounding of the result)
    assert sorted(str(r.content["info"]["factory"]) for r in replies) == ["f11", "f22", "f33"]
    states = [r.content["arrays"].to_torch_state_dict() for r in replies]
    assert all(torch.equal(s[k], states[0][k]) for s in states for k in s)  # every reply carries the aggregate
    total = sum(COUNTS.values())
    bound = SecAggEncoding(cfg.secagg_range, 3).error_bound([c / SECAGG_MAX_WEIGHT for c in COUNTS.values()])
    assert bound < 1e-6
    for k, g in global_state.items():
        exact = g.double() + sum(COUNTS[n] * updates[n][k].double() for n in NODES) / total
        tolerance = bound + torch.finfo(torch.float32).eps * exact.abs()
        assert ((states[0][k].double() - exact).abs() <= tolerance).all()
    # what reached the server from each factory: no arrays, and masked integers that alone say nothing
    masked = [r for r in grid.received if Key.MASKED_PARAMETERS in r.content.config_records[RECORD_KEY_CONFIGS]]
    assert len(masked) == 3
    for reply in masked:
        assert all(len(record) == 0 for record in reply.content.array_records.values())
        vector = [bytes_to_ndarray(b) for b in reply.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]]
        values = vector[1].astype(np.float64)  # [weight, "w", "b"]: as if one factory's share were the sum
        assert values.std() > 1e8  # uniform over [0, 2^32): hidden (the encoded update alone: std ~4e3)


class RefusingGrid(InProcessGrid):
    """As a gateway whose body cap is below the masked vector: two factories' uploads get a 413."""

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for reply in super().send_and_receive(messages, timeout=timeout):
            configs = reply.content.config_records.get(RECORD_KEY_CONFIGS) if reply.has_content() else None
            if configs and Key.MASKED_PARAMETERS in configs and reply.metadata.src_node_id != NODES[0]:
                self.uploaded = sum(len(b) for b in configs[Key.MASKED_PARAMETERS])
                reply = Message(Error(0, "413 Request Entity Too Large"), reply_to=reply)
            replies.append(reply)
        return replies


def test_a_halted_secagg_round_says_why_and_the_upload_size_a_gateway_must_admit(task_identity):
    # Prepare: three factories, two of whose masked uploads are refused on the way
    global_state, cfg = _state(0), PrivacyConfig(secure_aggregation=True)
    grid = RefusingGrid(_secure_grid(_updates(0.01), cfg).handlers)
    server = PrivacyServer(cfg, 3, grid, privacy.noise_generator(0))
    # Execute
    replies = server.send_and_receive(_train_messages(global_state))
    # Assert: no aggregate, and the reason names SecAgg+ and a size at least that of one masked upload
    assert replies == []
    assert server.halted is not None and server.halted.startswith("SecAgg+ halted")
    stated_mb = float(server.halted.split(" MB message")[0].rsplit(" ", 1)[1])
    assert grid.uploaded / 1e6 <= stated_mb <= grid.uploaded / 1e6 + 0.2
    assert "--max-body-mb" in server.halted


def test_distributed_dp_noise_adds_up_to_the_central_noise(task_identity):
    # Prepare: updates longer than the clip, SecAgg+ with DP (each factory adds its noise share)
    global_state, updates = _state(0), _updates(0.05)
    cfg = PrivacyConfig(secure_aggregation=True, dp_clip=0.05, dp_noise_multiplier=2.0)
    # Execute
    replies = secure_exchange(_secure_grid(updates, cfg), _train_messages(global_state), cfg, 3, None)
    # Assert: global + (sum of clipped updates + N(0, (sigma C)^2)) / n, the same as central DP
    aggregate = replies[0].content["arrays"].to_torch_state_dict()
    clipped = {n: clip_update(updates[n], cfg.dp_clip) for n in NODES}
    residual = torch.cat(
        [
            (aggregate[k].double() - g.double() - sum(clipped[n][k] for n in NODES) / 3).flatten()
            for k, g in global_state.items()
        ]
    )
    assert all(update_norm(updates[n]) > 2 * cfg.dp_clip for n in NODES)
    assert residual.std().item() == pytest.approx(2.0 * 0.05 / 3, rel=0.05)
    assert abs(residual.mean().item()) < 4 * 2.0 * 0.05 / 3 / math.sqrt(residual.numel())


def test_central_dp_adds_calibrated_noise_to_the_sum_of_clipped_updates(task_identity):
    # Prepare: three plain replies (the server sees them: central DP needs a trusted server)
    global_state, updates = _state(0), _updates(0.05)
    global_state["count"] = torch.tensor([3], dtype=torch.int64)
    replies = []
    for n in NODES:
        local = {k: global_state[k] + updates[n][k] for k in updates[n]} | {"count": torch.tensor([9])}
        content = RecordDict(
            {
                "arrays": ArrayRecord(local),
                "metrics": MetricRecord({"num-examples": COUNTS[n], "train-loss": 1.0}),
                "info": ConfigRecord({"factory": f"f{n}", "received-hash": ""}),
            }
        )
        request = Message(RecordDict(), dst_node_id=n, message_type=MessageType.TRAIN)
        replies.append(Message(content, reply_to=request))
    config = with_overrides(RunConfig(), "federation", aggregation="mean")
    config = with_overrides(config, "privacy", dp_clip=0.05, dp_noise_multiplier=1.5)
    server = PrivacyServer.of(config, 3, InProcessGrid({}), seed=0)
    server.shares = 3
    # Execute
    out, record = server.aggregate_input(replies, ArrayRecord(global_state))
    # Assert: one reply, the noisy mean with the fixed denominator; the integer buffer is the global one
    assert len(out) == 1 and record == {"noise_multiplier": 1.5, "factories": ["f11", "f22", "f33"]}
    mean = out[0].content["arrays"].to_torch_state_dict()
    residual = torch.cat(
        [
            (mean[k] - global_state[k] - sum(clip_update(updates[n], 0.05)[k] for n in NODES) / 3).flatten()
            for k in ("w", "b")
        ]
    )
    assert residual.std().item() == pytest.approx(1.5 * 0.05 / 3, rel=0.05)
    assert torch.equal(mean["count"], torch.tensor([3]))


def _exact_gaussian_epsilon(sigma: float, rounds: int, delta: float) -> float:
    """The exact epsilon of ``rounds`` composed Gaussian mechanisms (mu-GDP with mu = sqrt(rounds) / sigma)."""
    mu = math.sqrt(rounds) / sigma

    def excess(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    return brentq(excess, 0.0, 100.0)


def test_accountant_is_a_tight_upper_bound_and_calibrates_the_noise():
    for sigma, rounds in ((1.0, 5), (3.0, 3), (10.0, 10)):
        eps = epsilon_for([sigma] * rounds, 1e-5)
        exact = _exact_gaussian_epsilon(sigma, rounds, 1e-5)
        assert exact <= eps <= 1.15 * exact  # RDP: an upper bound, 7-9% above the exact value here
    sigma = noise_multiplier_for(3.0, 1e-5, 5)
    assert epsilon_for([sigma] * 5, 1e-5) == pytest.approx(3.0, rel=1e-3)
    assert noise_multiplier_for(1.0, 1e-5, 5) > sigma > noise_multiplier_for(8.0, 1e-5, 5)
    assert epsilon_for([sigma] * 5 + [0.0], 1e-5) == math.inf and noise_multiplier_for(math.inf, 1e-5, 5) == 0.0


def test_privacy_report_charges_each_factory_for_the_rounds_it_took_part_in():
    # Prepare: south missed round 2; round 3 was not aggregated (nothing released)
    history = [
        {"aggregated": True, "privacy": {"noise_multiplier": 2.0, "factories": ["north", "south"]}},
        {"aggregated": True, "privacy": {"noise_multiplier": 2.0, "factories": ["north"]}},
        {"aggregated": False},
    ]
    cfg = PrivacyConfig(dp_clip=0.5, dp_noise_multiplier=2.0, dp_delta=1e-6)
    # Execute
    report = privacy_report(cfg, history)
    plain = privacy_report(PrivacyConfig(secure_aggregation=True), history[:1])
    # Assert
    assert report["per_factory"]["north"] == {"epsilon": pytest.approx(epsilon_for([2.0, 2.0], 1e-6)), "rounds": 2}
    assert report["per_factory"]["south"]["epsilon"] == pytest.approx(epsilon_for([2.0], 1e-6))
    assert report["epsilon"] == report["per_factory"]["north"]["epsilon"] and report["dp"] == "central"
    assert (report["rounds"], report["delta"], report["clip"]) == (2, 1e-6, 0.5)
    assert plain["epsilon"] is None and plain["dp"] is None
    json.dumps(report, allow_nan=False)  # metrics.json stays strict JSON
    assert "central DP: epsilon" in privacy_note(report) and "SecAgg+" in privacy_note(plain)


def test_bad_privacy_settings_fail_before_any_round(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[privacy]\ndp_noise_multiplier = 1.0\n")
    with pytest.raises(ConfigError, match="needs dp_clip"):
        PrivacyServer.of(load_config(path), 3, InProcessGrid({}))
    path.write_text("[privacy]\ndp_clip = 1.0\n")  # the default robust rule needs each update: refused at load
    with pytest.raises(ConfigError, match=r"aggregation = 'trimmed_mean' needs each factory's own update"):
        load_config(path)
    path.write_text("[federation]\naggregation = 'mean'\n[privacy]\ndp_delta = 1.5\ndp_clip = 1.0\n")
    with pytest.raises(ConfigError, match="dp_delta"):
        PrivacyServer.of(load_config(path), 3, InProcessGrid({}))
    path.write_text("[privacy]\nsecure_agregation = true\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(path)
    assert PrivacyServer.of(RunConfig(), 3, InProcessGrid({})) is None  # the default: plain exchange


@pytest.fixture(scope="module")
def three_factories(tmp_path_factory) -> Path:
    return make_tree(
        tmp_path_factory.mktemp("privacy") / "data",
        machines=("fan", "valve", "gearbox"),
        train_source=6,
        train_target=2,
    )


def _tiny_federation(**privacy_values) -> RunConfig:
    """1 round; the log-mel detector: the factories still train the shared encoder, scoring is cheap."""
    cfg = with_overrides(RunConfig(), "model", checkpoint="none")
    cfg = with_overrides(cfg, "detect", features="logmel")
    cfg = with_overrides(cfg, "federation", rounds=1, evaluate_every=0, personalize_epochs=0, aggregation="mean")
    return with_overrides(cfg, "privacy", **privacy_values) if privacy_values else cfg


def _run_in_process(cfg: RunConfig, data: Path, run_dir: Path) -> dict:
    """Our ServerApp loop and three real ClientApps, connected by the in-process grid (no Ray)."""
    factories = parse_factories("", ["fan", "gearbox", "valve"])
    settings = {i + 1: ClientSettings(cfg, data, f, run_dir / "factories" / f.name) for i, f in enumerate(factories)}
    app = make_client_app(lambda context: settings[context.node_id])
    grid = InProcessGrid({node: app for node in settings})
    return run_server(grid, ServerSettings(cfg, run_dir, len(factories)))


def test_secure_aggregation_gives_plain_fedavg_s_model_and_the_strategy_only_the_aggregate(
    tmp_path, three_factories, monkeypatch, task_identity
):
    """Our server loop and ClientApps (no Ray), 3 factories, 1 round, same seeds: plain vs SecAgg+."""
    from flwr.serverapp.strategy import FedAvg

    # Prepare: record every reply set the strategy's aggregation receives
    seen: list[list[dict[str, torch.Tensor]]] = []
    aggregate = FedAvg.aggregate_train

    def spy(self, server_round, replies):
        replies = list(replies)
        seen.append([m.content["arrays"].to_torch_state_dict() for m in replies])
        return aggregate(self, server_round, replies)

    monkeypatch.setattr(FedAvg, "aggregate_train", spy)
    # Execute
    plain = _run_in_process(_tiny_federation(), three_factories, tmp_path / "plain")
    plain_seen = seen.pop()
    secure = _run_in_process(_tiny_federation(secure_aggregation=True), three_factories, tmp_path / "secure")
    # Assert: the plain strategy saw three different models, the SecAgg+ one three copies of one aggregate
    key = "post_extract_proj.weight"
    assert len(plain_seen) == 3 and not torch.equal(plain_seen[0][key], plain_seen[1][key])
    assert len(seen) == 1 and len(seen[0]) == 3
    assert all(torch.equal(s[k], seen[0][0][k]) for s in seen[0] for k in s)
    final_plain = GlobalCheckpoint.load(tmp_path / "plain" / "checkpoints" / "latest.pt").params
    final_secure = GlobalCheckpoint.load(tmp_path / "secure" / "checkpoints" / "latest.pt").params
    bound = SecAggEncoding(0.1, 3).error_bound([8 / SECAGG_MAX_WEIGHT] * 3)  # 8 training clips per factory
    eps = torch.finfo(torch.float32).eps
    worst = max(
        float(((final_secure[k] - final_plain[k]).abs() - eps * final_plain[k].abs()).max()) for k in final_plain
    )
    assert worst <= bound < 1e-6
    assert any(not torch.equal(final_secure[k], final_plain[k]) for k in final_plain)  # it went through SecAgg+
    # every factory scored its test clips with the global model; the server result says what protected it
    assert secure["rounds"][0]["answered"] == 3 and secure["rounds"][0]["aggregated"]
    assert set(secure["machines"]) == {"fan", "valve", "gearbox"}
    assert secure["privacy"]["secure_aggregation"] and secure["privacy"]["epsilon"] is None
    assert "privacy" not in plain


def test_secagg_with_distributed_dp_in_the_simulation_engine(tmp_path, three_factories):
    """Simulation Engine (Ray), SecAgg+ with DP, 2 rounds: the per-factory epsilon in metrics.json and the report."""
    # Prepare
    cfg = with_overrides(
        _tiny_federation(secure_aggregation=True, dp_clip=0.05, dp_noise_multiplier=2.0), "federation", rounds=2
    )
    # Execute
    result = run_federated(three_factories, tmp_path / "work", cfg)
    summary = write_run(tmp_path / "out", result, cfg, three_factories)
    # Assert
    assert [r["aggregated"] for r in result.extra["rounds"]] == [True, True]
    expected = epsilon_for([2.0, 2.0], 1e-5)
    assert summary["privacy"]["epsilon"] == pytest.approx(expected) and summary["privacy"]["dp"] == "distributed"
    assert {f: v["rounds"] for f, v in summary["privacy"]["per_factory"].items()} == {
        "fan": 2,
        "gearbox": 2,
        "valve": 2,
    }
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["privacy"]["rounds"] == 2
    assert f"distributed DP: epsilon {expected:.2f}" in (tmp_path / "out" / "report.html").read_text()
    assert set(summary["machines"]) == {"fan", "valve", "gearbox"}
