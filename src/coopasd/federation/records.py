"""Everything that crosses the wire, and every conversion to and from Flower records (once, here).

A train reply holds the shared parameters, the example count and training metric values; an
evaluate reply holds metric values per machine type and section, one triple per factory, or none
(``[privacy] report_metrics``). Never audio, features, embeddings, clip names or attributes.
Replies are unpacked here against that schema: anything else raises :class:`MalformedReply`,
whose message is the reason the server records.

What is shared is a choice (``[federation] share``):
- ``encoder``: every encoder parameter and buffer;
- ``no_norm``: all but the LayerNorm weights and biases, which stay local (FedBN-style);
- ``lora``: only the LoRA adapters (the frozen backbone never travels).
The margin head is never shared: each factory's label space is its own. Neither is the frame
autoencoder's input scaling (the ``ae`` member): it is the mean and spread of a factory's own log-mel
frames, a statistic of its audio; its weights are shared as the encoder's are.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from torch import nn

from coopasd.dcase.evaluation import SectionScores
from coopasd.dcase.metrics import SectionMetrics, harmonic_mean
from coopasd.learn.train import EpochStats
from coopasd.model.frame_autoencoder import is_local_statistic

Share = Literal["encoder", "no_norm", "lora"]
ReportMetrics = Literal["per_factory", "aggregate", "none"]
TRAIN_METRICS = ("num-examples", "train-loss", "train-accuracy", "train-seconds")  # a train reply's metric keys
SCORE_METRICS = ("auc_source", "auc_target", "pauc")  # the three official values
SECTION_METRICS = (*SCORE_METRICS, "n_clips", "n_anomalies")  # per section, "<machine>/<section>/<name>"


def _norm_keys(encoder: nn.Module) -> set[str]:
    keys: set[str] = set()
    for name, module in encoder.named_modules():
        if isinstance(module, nn.LayerNorm):
            keys.update(f"{name}.{p}" for p, _ in module.named_parameters(recurse=False))
    return keys


def shared_keys(encoder: nn.Module, share: Share) -> list[str]:
    """State-dict keys of ``encoder`` that the server aggregates, in state-dict order (never the frame
    autoencoder's input scaling: a factory's own log-mel statistics, which stay with it)."""
    keys = [k for k in encoder.state_dict() if not is_local_statistic(k)]
    if share == "encoder":
        return keys
    if share == "no_norm":
        local = _norm_keys(encoder)
        return [k for k in keys if k not in local]
    if share == "lora":
        lora = [k for k in keys if ".lora_" in k]
        if not lora:
            raise ValueError("share = 'lora' needs LoRA adapters (set [model] lora_rank > 0)")
        return lora
    raise ValueError(f"unknown share mode '{share}'")


def to_record(encoder: nn.Module, keys: Iterable[str]) -> ArrayRecord:
    """The shared parameters as an ArrayRecord (copies on the CPU)."""
    state = encoder.state_dict()
    return ArrayRecord({k: state[k].detach().cpu().clone() for k in keys})


def from_record(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return record.to_torch_state_dict()


def apply_shared(encoder: nn.Module, shared: dict[str, torch.Tensor]) -> None:
    """Overwrite the shared parameters of ``encoder``; everything else (local params) stays."""
    own = encoder.state_dict()
    unknown = sorted(set(shared) - set(own))
    if unknown:
        raise KeyError(f"received parameters the model does not have: {unknown[:3]}")
    with torch.no_grad():
        for k, v in shared.items():
            own[k].copy_(v)


def record_bytes(record: ArrayRecord) -> int:
    """Payload size of an ArrayRecord's arrays (what one transfer costs, before framing)."""
    return sum(len(array.data) for array in record.values())


def transfer_bytes(encoder: nn.Module, lora_rank: int = 8) -> dict[str, int]:
    """Bytes of one model transfer (one factory, one direction): full encoder vs LoRA adapters.

    ``encoder`` must not carry adapters yet; a copy gets them for the LoRA figure.
    """

    def size(model: nn.Module, share: Share) -> int:
        state = model.state_dict()
        return sum(state[k].numel() * state[k].element_size() for k in shared_keys(model, share))

    if not hasattr(encoder, "add_lora"):  # the aiSFX CNN: no LoRA, its trainable blocks are the whole exchange
        return {"full_encoder": size(encoder, "encoder")}
    with_lora = copy.deepcopy(encoder)
    with_lora.add_lora(lora_rank)  # type: ignore[operator]
    return {"full_encoder": size(encoder, "encoder"), f"lora_rank_{lora_rank}": size(with_lora, "lora")}


def train_config(lr_scale: float) -> ConfigRecord:
    """The server's train settings; the strategy adds ``server-round`` (and FedProx ``proximal-mu``)."""
    return ConfigRecord({"lr-scale": lr_scale})


def train_request(msg: Message) -> tuple[dict[str, torch.Tensor], int, float, float]:
    """A train message unpacked: global shared parameters, round, learning-rate scale, proximal mu."""
    config = msg.content["config"]
    return (
        from_record(msg.content["arrays"]),
        int(config["server-round"]),
        float(config.get("lr-scale", 1.0)),
        float(config.get("proximal-mu", 0.0)),
    )


def evaluate_request(msg: Message) -> tuple[dict[str, torch.Tensor], int, bool]:
    """An evaluate message unpacked: global shared parameters, round, final or not."""
    config = msg.content["config"]
    return from_record(msg.content["arrays"]), int(config["server-round"]), bool(config.get("final", False))


def evaluate_content(arrays: ArrayRecord, server_round: int, final: bool) -> RecordDict:
    """An evaluate message: the global parameters, the round, and whether it is the final one."""
    return RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": server_round, "final": final})})


def train_reply(
    encoder: nn.Module, keys: Sequence[str], factory: str, n_examples: int, history: Sequence[EpochStats], received: str
) -> RecordDict:
    """A factory's train reply: shared parameters, example count, training metrics, the hash it received."""
    metrics = MetricRecord(
        {
            "num-examples": n_examples,
            "train-loss": history[-1].loss if history else 0.0,
            "train-accuracy": history[-1].accuracy if history else 0.0,
            "train-seconds": float(sum(h.seconds for h in history)),
        }
    )
    info = ConfigRecord({"factory": factory, "received-hash": received})
    return RecordDict({"arrays": to_record(encoder, keys), "metrics": metrics, "info": info})


def metrics_reply(
    factory: str, n_test_clips: int, sections: Sequence[SectionScores], report: ReportMetrics = "per_factory"
) -> RecordDict:
    """A factory's evaluate reply: metric values only (no clip names), as much as ``report`` allows."""
    info = ConfigRecord({"factory": factory})
    scored = [sec.metrics() for sec in sections if sec.evaluable]
    if report == "none":
        return RecordDict({"info": info})
    if report == "aggregate":  # empty where no test clip has a label
        triple = {name: harmonic_mean([getattr(m, name) for m in scored]) for name in SCORE_METRICS if scored}
        return RecordDict({"metrics": MetricRecord(triple), "info": info})
    values: dict[str, float | int] = {"num-examples": n_test_clips}
    for m in scored:
        prefix = f"{m.machine_type}/{m.section}"
        values |= {f"{prefix}/{name}": getattr(m, name) for name in SECTION_METRICS}
    return RecordDict({"metrics": MetricRecord(values), "info": info})


class MalformedReply(ValueError):
    """A reply that does not follow the protocol; the message is the reason the server records."""


@dataclass(frozen=True)
class TrainReply:
    """A train reply, unpacked: who sent it, the shared parameters, metric values, the hash it received."""

    factory: str
    params: dict[str, torch.Tensor]
    metrics: dict[str, int | float]
    received_hash: str


@dataclass(frozen=True)
class EvaluateReply:
    """An evaluate reply, unpacked: per-section values (per_factory) or one triple (aggregate) or nothing."""

    factory: str
    sections: list[SectionMetrics]
    triple: tuple[float, float, float] | None = None
    n_examples: int | None = None


def claimed_name(msg: Message) -> str | None:
    """The factory name a reply claims to come from (None where it carries none)."""
    info = msg.content.config_records.get("info")
    name = info.get("factory") if info is not None else None
    return name if isinstance(name, str) and name else None


def sender(msg: Message) -> str:
    """The factory name a reply carries, or ``node <id>`` where it carries none."""
    return claimed_name(msg) or f"node {msg.metadata.src_node_id}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WRAPPED = re.compile(r"<class '[^']*'>:<'(.*)'>", re.DOTALL)


def failure_reason(reason: str, limit: int = 300) -> str:
    """The one line of a failed node's error that says why: Flower's simulation wraps the ClientApp's
    exception in a Ray traceback ending ``... Message: <the exception's own text>'>``; that text, else
    the last non-empty line, without terminal colours, at most ``limit`` characters."""
    text = _ANSI.sub("", reason).strip()
    wrapped = _WRAPPED.fullmatch(text)  # Flower's "<class 'RuntimeError'>:<'the text'>"
    if wrapped:
        text = wrapped.group(1)
    if "Message: " in text:
        text = text.rsplit("Message: ", 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else "no reason given"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def failed_node(msg: Message, names: Mapping[int, str]) -> str:
    """``factory 'fan' (node 7)`` where the node is bound to a factory, else ``node 7``."""
    node = msg.metadata.src_node_id
    return f"factory '{names[node]}' (node {node})" if node in names else f"node {node}"


def _check_records(msg: Message, arrays: set[str], metrics: set[str], configs: set[str]) -> None:
    content = msg.content
    for kind, got, want in (
        ("array", content.array_records, arrays),
        ("metric", content.metric_records, metrics),
        ("config", content.config_records, configs),
    ):
        if set(got) != want:
            raise MalformedReply(f"{kind} records {sorted(got)}, expected {sorted(want)}")


def _info(msg: Message, keys: set[str]) -> dict[str, str]:
    info = msg.content.config_records["info"]
    if set(info) != keys or not all(isinstance(v, str) and v for v in info.values()):
        raise MalformedReply(f"'info' must hold exactly the non-empty strings {sorted(keys)}")
    return {k: str(v) for k, v in info.items()}


def _scalars(record: MetricRecord) -> dict[str, int | float]:
    values = dict(record)
    lists = sorted(k for k, v in values.items() if isinstance(v, list))
    if lists:
        raise MalformedReply(f"metric(s) {lists[:3]} are lists, expected single numbers")
    return values  # type: ignore[return-value]


def _count(value: int | float, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedReply(f"{key} = {value!r} is not an integer count")
    return value


def unpack_train_reply(msg: Message) -> TrainReply:
    """A train reply checked against the protocol (record names, keys, types; not values)."""
    _check_records(msg, {"arrays"}, {"metrics"}, {"info"})
    info = _info(msg, {"factory", "received-hash"})
    metrics = _scalars(msg.content.metric_records["metrics"])
    if set(metrics) != set(TRAIN_METRICS):
        raise MalformedReply(f"train metrics {sorted(metrics)}, expected {sorted(TRAIN_METRICS)}")
    try:
        params = from_record(msg.content["arrays"])
    except Exception as err:  # noqa: BLE001 - any unreadable payload is the same protocol violation
        raise MalformedReply(f"arrays cannot be read ({type(err).__name__})") from err
    return TrainReply(info["factory"], params, metrics, info["received-hash"])


def unpack_evaluate_reply(msg: Message, report: ReportMetrics) -> EvaluateReply:
    """An evaluate reply checked against the protocol of ``report`` (record names, keys, types; not values).

    A factory with no labelled test clips sends no section (per_factory) or an empty record (aggregate).
    """
    _check_records(msg, set(), set() if report == "none" else {"metrics"}, {"info"})
    factory = _info(msg, {"factory"})["factory"]
    if report == "none":
        return EvaluateReply(factory, [])
    values = _scalars(msg.content.metric_records["metrics"])
    if report == "aggregate":
        if not values:
            return EvaluateReply(factory, [])
        if set(values) != set(SCORE_METRICS):
            raise MalformedReply(f"aggregate metrics {sorted(values)}, expected {sorted(SCORE_METRICS)}")
        return EvaluateReply(factory, [], (values["auc_source"], values["auc_target"], values["pauc"]))
    n_examples = _count(values.pop("num-examples", None), "num-examples")  # type: ignore[arg-type]
    prefixes = {key.rsplit("/", 1)[0] for key in values}
    expected = {f"{p}/{name}" for p in prefixes for name in SECTION_METRICS}
    if set(values) != expected or any(p.count("/") != 1 for p in prefixes):
        odd = sorted(set(values) ^ expected)[:3] or sorted(prefixes)[:3]
        raise MalformedReply(f"per-section metrics must be '<machine>/<section>/<metric>' for {SECTION_METRICS}: {odd}")
    sections = []
    for prefix in sorted(prefixes):
        machine, section = prefix.split("/")
        scores = [float(values[f"{prefix}/{name}"]) for name in SCORE_METRICS]
        counts = [_count(values[f"{prefix}/{name}"], f"{prefix}/{name}") for name in ("n_clips", "n_anomalies")]
        sections.append(SectionMetrics(machine, section, *scores, *counts))
    return EvaluateReply(factory, sections, None, n_examples)


def factory_of(msg: Message) -> str:
    """The factory name a (validated) reply carries."""
    return str(msg.content.config_records["info"]["factory"])


def reply_metric(msg: Message, key: str) -> float:
    return float(msg.content.metric_records["metrics"][key])


def received_hash(msg: Message) -> str:
    return str(msg.content.config_records["info"]["received-hash"])
