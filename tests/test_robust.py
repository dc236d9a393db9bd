"""Trust: robust rules, reply screening, the hostile-factory drill, what leaves a factory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvgM, FedMedian

from coopasd.config.settings import FederationConfig, RunConfig, hostile_kind, load_run_config, with_overrides
from coopasd.data.layout import Clip, discover_clips
from coopasd.dcase.evaluation import SectionScores
from coopasd.dcase.results import ModeResult
from coopasd.errors import ConfigError, CoopasdError
from coopasd.federation.client_app import hostile_update
from coopasd.federation.records import TRAIN_METRICS, metrics_reply, shared_keys
from coopasd.federation.strategy import make_strategy, screen_evaluate, screen_train
from coopasd.model.checkpoint import initial_encoder
from coopasd.report.run_report import write_run
from tests.helpers import make_tree

GLOBAL = {"w": torch.zeros(2)}
# four honest updates on a line and one far away: hand-checked results in test_rules_on_tiny_tensors
UPDATES = [[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, -100.0]]


def _reply(content: RecordDict, node: int, kind: str = MessageType.TRAIN) -> Message:
    meta = Metadata(
        run_id=1,
        message_id="",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id="",
        group_id="",
        created_at=0.0,
        ttl=60.0,
        message_type=kind,
    )
    return Message(content, metadata=meta)


def _train_reply(name: str, w, n: int | float = 100, node: int = 0, **metrics) -> Message:
    values = {"num-examples": n, "train-loss": 1.0, "train-accuracy": 0.5, "train-seconds": 2.0} | metrics
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": torch.tensor(w, dtype=torch.float32)}),
            "metrics": MetricRecord(values),
            "info": ConfigRecord({"factory": name, "received-hash": "0123456789abcdef"}),
        }
    )
    return _reply(content, node)


def _fed(**overrides) -> FederationConfig:
    return FederationConfig(**({"strategy": "fedavg", "update_norm_bound": 0.0} | overrides))


def _aggregate(cfg: FederationConfig, replies: list[Message], current=GLOBAL, strategy=None) -> np.ndarray:
    strategy = strategy or make_strategy(cfg, len(replies))
    strategy.current_arrays = ArrayRecord({k: v.clone() for k, v in current.items()})  # what configure_train sets
    screened = screen_train(replies, current, cfg)
    arrays, _ = strategy.aggregate_train(1, screened.accepted)
    return arrays.to_torch_state_dict()["w"].numpy()


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("mean", [22.0, 0.0]),  # equal counts: (1+2+3+4+100)/5, (10+20+30+40-100)/5
        ("median", [3.0, 20.0]),  # per coordinate
        ("trimmed_mean", [3.0, 20.0]),  # f = 1 cut per end: mean of (2, 3, 4) and of (10, 20, 30)
        ("krum", [2.5, 25.0]),  # Multi-Krum keeps the n - f = 4 updates closest to their 2 nearest
    ],
)
def test_rules_on_tiny_tensors(rule, expected):
    replies = [_train_reply(f"f{i}", w, node=i) for i, w in enumerate(UPDATES)]
    got = _aggregate(_fed(aggregation=rule, max_hostile=1), replies)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_rules_never_guard_against_half_of_a_small_federation():
    two = [_train_reply(f"f{i}", w, node=i) for i, w in enumerate(UPDATES[:2])]
    # two factories: both count, as in the mean (Krum is refused there: tests/test_federation_misuse.py)
    np.testing.assert_allclose(_aggregate(_fed(aggregation="trimmed_mean", max_hostile=1), two), [1.5, 15.0])
    three = [_train_reply(f"f{i}", w, node=i) for i, w in enumerate([UPDATES[0], UPDATES[1], UPDATES[4]])]
    np.testing.assert_allclose(_aggregate(_fed(aggregation="trimmed_mean"), three), [2.0, 10.0])  # the median


def test_server_momentum_is_applied_to_the_robust_combination():
    cfg = _fed(strategy="fedavgm", aggregation="median", server_momentum=0.5, server_lr=1.0)
    strategy = make_strategy(cfg, 5)
    assert isinstance(strategy, FedAvgM) and isinstance(strategy, FedMedian)
    first = _aggregate(cfg, [_train_reply(f"f{i}", w, node=i) for i, w in enumerate(UPDATES)], strategy=strategy)
    # median step (3, 20); momentum starts at it
    np.testing.assert_allclose(first, [3.0, 20.0])
    current = {"w": torch.tensor(first)}
    replies = [_train_reply(f"f{i}", (torch.tensor(w) + current["w"]).tolist(), node=i) for i, w in enumerate(UPDATES)]
    second = _aggregate(cfg, replies, current, strategy)
    # median step again (3, 20); momentum 0.5 * (3, 20) + (3, 20) = (4.5, 30) added to (3, 20)
    np.testing.assert_allclose(second, [7.5, 50.0])


def test_a_claimed_billion_examples_does_not_take_the_mean():
    def replies(liar_claims: int | float) -> list[Message]:
        honest = [_train_reply(f"f{i}", [float(i + 1), 0.0], n=100, node=i) for i in range(3)]
        return [*honest, _train_reply("liar", [100.0, 0.0], n=liar_claims, node=9)]

    cfg = _fed(aggregation="mean", weight_cap=2.0)
    screened = screen_train(replies(10**9), GLOBAL, cfg)
    assert screened.weights == {"f0": 100.0, "f1": 100.0, "f2": 100.0, "liar": 200.0}  # 2 x the median claim
    got = _aggregate(cfg, replies(10**9))
    np.testing.assert_allclose(got, [(100 * (1 + 2 + 3) + 200 * 100) / 500, 0.0])  # not ~100
    # a count that is not an integer (1e9 as a float) is rejected outright
    assert "1000000000.0 is not a positive integer" in screen_train(replies(1e9), GLOBAL, cfg).rejected["liar"]


def test_an_update_far_longer_than_the_rounds_median_is_rejected():
    replies = [_train_reply(f"f{i}", w, node=i) for i, w in enumerate([[1.0, 0.0], [0.0, 1.5], [2.0, 0.0]])]
    replies.append(_train_reply("boost", [100.0, 0.0], node=9))
    screened = screen_train(replies, GLOBAL, _fed(update_norm_bound=3.0))
    assert [m.content.config_records["info"]["factory"] for m in screened.accepted] == ["f0", "f1", "f2"]
    assert set(screened.rejected) == {"boost"} and "66.7 x the round's median 1.5" in screened.rejected["boost"]
    assert screened.norms["boost"] == pytest.approx(100.0)


def _without(msg: Message, record: str) -> Message:
    content = RecordDict({k: v for k, v in msg.content.items() if k != record})
    return _reply(content, msg.metadata.src_node_id)


@pytest.mark.parametrize(
    ("make", "who", "reason"),
    [
        (lambda: _without(_train_reply("bad", [1.0, 1.0], node=7), "info"), "node 7", "config records [], expected"),
        (lambda: _without(_train_reply("bad", [1.0, 1.0]), "metrics"), "bad", "metric records [], expected"),
        (lambda: _without(_train_reply("bad", [1.0, 1.0]), "arrays"), "bad", "array records [], expected"),
        (lambda: _train_reply("bad", [1.0, 1.0], extra=3.0), "bad", "train metrics"),
        (lambda: _train_reply("bad", [1.0, 1.0], **{"train-loss": [1.0, 2.0]}), "bad", "are lists"),
        (lambda: _train_reply("bad", [1.0, 1.0], n=0), "bad", "not a positive integer"),
        (lambda: _train_reply("bad", [1.0, float("nan")]), "bad", "non-finite"),
        (lambda: _train_reply("bad", [1.0, 1.0, 1.0]), "bad", "shape (3,) differs"),
        (lambda: _train_reply("bad", [1.0, 1.0], **{"train-loss": float("inf")}), "bad", "non-finite metric"),
    ],
)
def test_a_malformed_train_reply_is_rejected_with_its_reason(make, who, reason):
    good = [_train_reply("f0", [1.0, 0.0], node=1), _train_reply("f1", [0.0, 1.0], node=2)]
    screened = screen_train([*good, make()], GLOBAL, _fed(update_norm_bound=3.0))
    assert len(screened.accepted) == 2 and list(screened.rejected) == [who]
    assert reason in screened.rejected[who]


def test_two_replies_for_one_factory_are_both_rejected():
    replies = [_train_reply("f0", [1.0, 0.0], node=1), _train_reply("f0", [0.0, 1.0], node=2)]
    screened = screen_train([*replies, _train_reply("f1", [1.0, 1.0], node=3)], GLOBAL, _fed())
    assert [m.content.config_records["info"]["factory"] for m in screened.accepted] == ["f1"]
    assert "two replies" in screened.rejected["f0"]


def _section(prefix: str = "fan/00", **values) -> dict:
    base = {"auc_source": 0.8, "auc_target": 0.7, "pauc": 0.6, "n_clips": 24, "n_anomalies": 12} | values
    return {f"{prefix}/{k}": v for k, v in base.items()}


def _evaluate_reply(name: str | None, metrics: dict | None, node: int = 0) -> Message:
    records: dict = {}
    if metrics is not None:
        records["metrics"] = MetricRecord(metrics)
    if name is not None:
        records["info"] = ConfigRecord({"factory": name})
    return _reply(RecordDict(records), node, MessageType.EVALUATE)


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({"num-examples": 24} | _section(auc_source=float("nan")), "fan/00/auc_source = nan is not a value in [0, 1]"),
        ({"num-examples": 24} | _section(pauc=1.3), "fan/00/pauc = 1.3"),
        ({"num-examples": 24} | _section(n_clips=24.5), "n_clips = 24.5 is not an integer"),
        ({"num-examples": 24} | _section(n_anomalies=0), "n_anomalies = 0"),
        ({"num-examples": -3} | _section(), "num-examples = -3 is not positive"),
        (_section(), "num-examples = None"),
        ({"num-examples": 24, "fan/00/auc_source": 0.5}, "per-section metrics"),
        (None, "metric records [], expected ['metrics']"),
    ],
)
def test_bad_metric_values_are_rejected_before_they_enter_a_score(metrics, reason):
    replies = [_evaluate_reply("valve", {"num-examples": 24} | _section("valve/00")), _evaluate_reply("fan", metrics)]
    accepted, rejected = screen_evaluate(replies, "per_factory")
    assert [r.factory for r in accepted] == ["valve"] and accepted[0].sections[0].auc_source == 0.8
    assert list(rejected) == ["fan"] and reason in rejected["fan"]


def test_evaluate_replies_of_the_other_report_modes_are_checked_too():
    triple = {"auc_source": 0.8, "auc_target": 0.7, "pauc": 0.6}
    accepted, rejected = screen_evaluate(
        [_evaluate_reply("a", triple), _evaluate_reply("b", triple | {"pauc": -0.1}), _evaluate_reply(None, triple, 4)],
        "aggregate",
    )
    assert [r.triple for r in accepted] == [(0.8, 0.7, 0.6)]
    assert "pauc = -0.1" in rejected["b"] and "config records [], expected ['info']" in rejected["node 4"]
    accepted, rejected = screen_evaluate([_evaluate_reply("a", None), _evaluate_reply("b", triple)], "none")
    assert [r.factory for r in accepted] == ["a"] and "expected []" in rejected["b"]


def test_what_an_evaluate_reply_carries_in_each_report_mode():
    kinds = [(d, label) for d in ("source", "target") for label in ("normal", "normal", "anomaly", "anomaly")]
    clips = [
        Clip(Path(f"section_00_{d}_test_{label}_{i:04d}.wav"), "fan", "00", "test", d, label, i)
        for i, (d, label) in enumerate(kinds)
    ]
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.1, 0.5, 0.6, 0.8])
    sections = [SectionScores("fan", "00", clips, scores, scores > 0.5, 0.5)]
    full = metrics_reply("north", 8, sections, "per_factory")
    m = full["metrics"]
    # source: normal 0.1, 0.2 vs anomalies 0.9, 0.3, 0.6, 0.8 -> 8 of 8 pairs; target: normal 0.1, 0.5 -> 7 of 8
    assert (m["fan/00/auc_source"], m["fan/00/auc_target"], m["fan/00/n_clips"], m["num-examples"]) == (
        1.0,
        0.875,
        8,
        8,
    )
    agg = metrics_reply("north", 8, sections, "aggregate")
    assert dict(agg["metrics"]) == {"auc_source": 1.0, "auc_target": 0.875, "pauc": pytest.approx(m["fan/00/pauc"])}
    assert list(agg.config_records) == ["info"] and not agg.array_records
    nothing = metrics_reply("north", 8, sections, "none")
    assert not nothing.metric_records and dict(nothing["info"]) == {"factory": "north"}


def test_hostile_updates_on_tiny_tensors():
    received = {"a": torch.tensor([1.0, 1.0]), "b": torch.zeros(2, 2)}
    sent = {"a": torch.tensor([2.0, 0.0]), "b": torch.ones(2, 2)}
    assert torch.equal(hostile_update(sent, received, "scale100", 0)["a"], torch.tensor([101.0, -99.0]))
    assert torch.equal(hostile_update(sent, received, "signflip", 0)["b"], -torch.ones(2, 2))
    noisy = hostile_update(sent, received, "noise", 0)
    assert float((noisy["b"] - received["b"]).norm()) == pytest.approx(2.0)  # the honest update's norm
    assert not torch.equal(noisy["b"], sent["b"])
    assert torch.isnan(hostile_update(sent, received, "nan", 0)["a"]).all()
    assert hostile_update(sent, received, "shape", 0)["a"].shape == (3,)


def test_fault_drill_specs_are_parsed_and_checked(tmp_path):
    assert hostile_kind("fan:scale100; valve:nan", "valve") == "nan" and hostile_kind("", "fan") is None
    for bad, message in [
        ("fan", "expected 'factory:value'"),
        ("fan:boom", "expected one of nan"),
        (":nan", "expected 'factory:value'"),
        ("fan:nan;fan:shape", "given twice"),
    ]:
        with pytest.raises(ConfigError, match=message):
            FederationConfig(hostile=bad)
    with pytest.raises(ConfigError, match="drop_out.*'fan:x'"):
        with_overrides(RunConfig(), "federation", drop_out="fan:x")
    path = tmp_path / "c.toml"
    path.write_text('[federation]\nhostile = "fan:sign"\n')
    with pytest.raises(ConfigError, match="c.toml.*hostile"):
        load_run_config(path)
    path.write_text('[privacy]\nreport_metrics = "everything"\n')
    with pytest.raises(ConfigError, match="expected one of"):
        load_run_config(path)


def test_a_drill_against_a_factory_that_does_not_exist_stops_before_the_run(tmp_path):
    from coopasd.federation.simulation import run_simulated

    data = make_tree(tmp_path / "data", machines=("fan",), train_source=2, train_target=1, test_per_domain=2)
    cfg = with_overrides(RunConfig(), "federation", hostile="pump:nan", min_participants=1)
    with pytest.raises(CoopasdError, match=r"hostile names unknown factories \['pump'\]"):
        run_simulated(cfg, data, tmp_path / "run")
    assert not (tmp_path / "run").exists()


class _ScriptedGrid:
    """A Grid whose five nodes answer from a script: two honest, a liar about its example count,
    one without ``info`` (today's KeyError), one sending NaN; bad metric values at evaluation."""

    def __init__(self, report: str) -> None:
        self.report, self.sent = report, []

    def get_node_ids(self) -> list[int]:
        return [1, 2, 3, 4, 5]

    def send_and_receive(self, messages, timeout=None) -> list[Message]:
        self.sent += [m.metadata.message_type for m in messages]
        return [self._answer(m) for m in messages]

    def _answer(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        name = {1: "north", 2: "south", 3: "anonymous", 4: "liar", 5: "broken"}[node]
        if msg.metadata.message_type == MessageType.TRAIN:
            params = {k: v + 0.001 * node for k, v in msg.content["arrays"].to_torch_state_dict().items()}
            if node == 5:
                params = {k: torch.full_like(v, float("nan")) for k, v in params.items()}
            values = {"num-examples": 10**9 if node == 4 else 100, "train-loss": 1.0}
            values |= {"train-accuracy": 0.5, "train-seconds": 1.0}
            records = {"arrays": ArrayRecord(params), "metrics": MetricRecord(values)}
            if node != 3:
                records["info"] = ConfigRecord({"factory": name, "received-hash": "0123456789abcdef"})
            return _reply(RecordDict(records), node)
        if self.report == "none":
            return _evaluate_reply(name, None, node)
        bad = {2: {"auc_source": float("nan")}, 5: {"pauc": 1.5}}.get(node, {})
        metrics = {"num-examples": 24} | _section(f"m{node}/00", **bad)
        if self.report == "aggregate":
            metrics = {"auc_source": 0.8, "auc_target": 0.7, "pauc": 0.6} | bad
        return _evaluate_reply(name, None if node == 3 else metrics, node)


@pytest.mark.parametrize("report", ["per_factory", "aggregate", "none"])
def test_the_server_survives_malformed_replies_and_records_why(tmp_path, monkeypatch, report):
    from flwr.supercore.task_identity import TaskIdentity

    from coopasd.federation.server_app import ServerSettings, run_server

    for attr in ("_run_id", "_node_id", "_task_id"):  # what a running ServerApp has set
        monkeypatch.setattr(TaskIdentity, attr, 1)
    cfg = with_overrides(RunConfig(), "model", checkpoint="none", lora_rank=1)  # small arrays: a fast test
    cfg = with_overrides(cfg, "federation", rounds=2, evaluate_every=1, share="lora")
    cfg = with_overrides(cfg, "privacy", report_metrics=report)
    grid = _ScriptedGrid(report)
    result = run_server(grid, ServerSettings(cfg, tmp_path, 5))  # type: ignore[arg-type]

    r1, r2 = result["rounds"]
    for entry in (r1, r2):
        assert entry["aggregated"] and entry["answered"] == 3
        assert entry["weight"] == {"liar": 200.0, "north": 100.0, "south": 100.0}  # 2 x the median claim
        assert "config records [], expected ['info']" in entry["rejected"]["node 3"]
        assert entry["rejected"]["broken"].startswith("update: ") and "non-finite values" in entry["rejected"]["broken"]
    assert json.loads((tmp_path / "federation.json").read_text())["rounds"][0]["rejected"] == r1["rejected"]
    if report == "none":
        assert grid.sent.count(MessageType.EVALUATE) == 5  # the final evaluation only: no per-round curve
        assert "official_score" not in result and set(r2["rejected"]) == {"node 3", "broken"}  # all sent nothing
        return
    # the valid sections are north's (node 1) and liar's (node 4): 0.8, 0.7, 0.6 twice
    assert result["official_score"] == pytest.approx(3 / (1 / 0.8 + 1 / 0.7 + 1 / 0.6))
    assert result["factories"] == ["liar", "north"]
    assert set(result.get("machines", {})) == ({"m1", "m4"} if report == "per_factory" else set())
    prefix = {"m2": "m2/00/", "m5": "m5/00/"} if report == "per_factory" else {"m2": "", "m5": ""}
    for entry, phase in ((r1, "metrics"), (r2, "final metrics")):
        assert f"{phase}: {prefix['m2']}auc_source = nan" in entry["rejected"]["south"]
        assert f"{phase}: {prefix['m5']}pauc = 1.5" in entry["rejected"]["broken"]
        assert f"{phase}: malformed reply: metric records []" in entry["rejected"]["anonymous"]


def test_a_hostile_factory_is_rejected_every_round_and_no_reply_carries_more_than_parameters_and_numbers(tmp_path):
    from coopasd.federation.simulation import run_simulated

    data = make_tree(tmp_path / "data", machines=("fan", "valve", "gearbox"), train_source=4, test_per_domain=4)
    cfg = with_overrides(RunConfig(), "model", checkpoint="none")
    cfg = with_overrides(cfg, "data", seconds=0.5)
    cfg = with_overrides(cfg, "train", crop_seconds=0.0)
    cfg = with_overrides(cfg, "detect", features="logmel")
    cfg = with_overrides(cfg, "federation", rounds=2, evaluate_every=0, personalize_epochs=0, hostile="fan:scale100")
    replies: list[Message] = []
    result, factories = run_simulated(cfg, data, tmp_path / "run", on_reply=replies.append)

    # the run completed; fan's boosted update was rejected in both rounds, the other two aggregated
    r1, r2 = result["rounds"]
    for entry in (r1, r2):
        assert entry["aggregated"] and entry["answered"] == 2 and set(entry["rejected"]) == {"fan"}
        assert entry["rejected"]["fan"].startswith("update: update norm")
        assert set(entry["weight"]) == {"gearbox", "valve"}
    assert set(result["machines"]) == {"fan", "gearbox", "valve"}  # its metric values are still fine
    mode = ModeResult.of_factories("federated", factories, {"rounds": result["rounds"]})
    write_run(tmp_path / "out", mode, cfg, data)
    written = json.loads((tmp_path / "out" / "metrics.json").read_text())["rounds"]
    assert [set(r["rejected"]) for r in written] == [{"fan"}, {"fan"}]

    # audit: every reply holds the shared parameter arrays, example counts and scalar metric values only
    encoder, _ = initial_encoder(cfg.model, cfg.train.seed)
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items() if k in set(shared_keys(encoder, "encoder"))}
    clips = discover_clips(data)
    secrets = {c.path.stem for c in clips} | {c.attribute_string for c in clips if c.attribute_string}
    secrets |= {f"{k}_{v}" for c in clips for k, v in c.attributes}
    train = [r for r in replies if r.metadata.message_type == MessageType.TRAIN]
    evaluate = [r for r in replies if r.metadata.message_type == MessageType.EVALUATE]
    assert len(train) == 2 * 3 and len(evaluate) == 3  # two rounds, then the final evaluation
    strings: list[str] = []
    for reply in replies:
        content = reply.content
        assert set(content.config_records) == {"info"}
        info = content["info"]
        assert all(isinstance(v, str) for v in info.values()) and info["factory"] in {"fan", "valve", "gearbox"}
        strings += [*info.keys(), *info.values()]
        metrics = content["metrics"]
        assert set(content.metric_records) == {"metrics"}
        assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values())
        strings += list(metrics.keys())
        if reply.metadata.message_type == MessageType.TRAIN:
            assert set(info) == {"factory", "received-hash"} and set(metrics) == set(TRAIN_METRICS)
            assert set(content.array_records) == {"arrays"}
            arrays = content["arrays"]
            assert {k: tuple(a.shape) for k, a in arrays.items()} == shapes
        else:
            assert set(info) == {"factory"} and not content.array_records
            assert all(k == "num-examples" or k.split("/")[0] == info["factory"] for k in metrics)
    leaked = sorted(s for s in secrets if any(s in text for text in strings))
    assert not leaked and all(".wav" not in text for text in strings)


@pytest.mark.parametrize(
    "reason",
    [
        # the Simulation Engine: the ClientApp's exception inside a Ray traceback, with terminal colours
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m "
        '(pid=1)\n  File "client_app.py", line 113, in handle_train\nRuntimeError: {text}\n\nThe above exception '
        "was the direct cause of the following exception:\n\nflwr.clientapp.client_app.ClientAppException: \n"
        "Exception ClientAppException occurred. Message: {text}'>",
        "<class 'RuntimeError'>:<'{text}'>",  # a SuperNode of the Deployment Engine
        "{text}",
    ],
)
def test_a_failed_factory_is_one_line_with_the_exceptions_own_text(reason):
    from coopasd.federation.records import failed_node, failure_reason

    text = "data/valve/train/section_00_x.wav: 0 samples"
    assert failure_reason(reason.format(text=text)) == text
    assert failure_reason("") == "no reason given" and len(failure_reason("x" * 5000)) == 300
    msg = _reply(RecordDict(), node=7)
    assert failed_node(msg, {7: "valve"}) == "factory 'valve' (node 7)" and failed_node(msg, {}) == "node 7"
