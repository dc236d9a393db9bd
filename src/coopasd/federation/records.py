"""Everything that crosses the wire, and every conversion to and from Flower records (once, here).

A train reply holds the shared parameters, the example count and training metric values; an
evaluate reply holds metric values per machine type and section. Never audio, features,
embeddings or clip names.

What is shared is a choice (``[federation] share``):
- ``encoder``: every encoder parameter and buffer;
- ``no_norm``: all but the LayerNorm weights and biases, which stay local (FedBN-style);
- ``lora``: only the LoRA adapters (the frozen backbone never travels).
The margin head is never shared: each factory's label space is its own.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from torch import nn

from coopasd.evaluation import SectionScores
from coopasd.metrics import SectionMetrics
from coopasd.train import EpochStats

Share = Literal["encoder", "no_norm", "lora"]


def _norm_keys(encoder: nn.Module) -> set[str]:
    keys: set[str] = set()
    for name, module in encoder.named_modules():
        if isinstance(module, nn.LayerNorm):
            keys.update(f"{name}.{p}" for p, _ in module.named_parameters(recurse=False))
    return keys


def shared_keys(encoder: nn.Module, share: Share) -> list[str]:
    """State-dict keys of ``encoder`` that the server aggregates, in state-dict order."""
    keys = list(encoder.state_dict())
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


def metrics_reply(factory: str, n_test_clips: int, sections: Sequence[SectionScores]) -> RecordDict:
    """A factory's evaluate reply: metric values per machine type and section (no clip names)."""
    values: dict[str, float | int] = {"num-examples": n_test_clips}
    for sec in sections:
        if sec.evaluable:
            m = sec.metrics()
            prefix = f"{sec.machine_type}/{sec.section}"
            values |= {
                f"{prefix}/auc_source": m.auc_source,
                f"{prefix}/auc_target": m.auc_target,
                f"{prefix}/pauc": m.pauc,
                f"{prefix}/n_clips": m.n_clips,
                f"{prefix}/n_anomalies": m.n_anomalies,
            }
    return RecordDict({"metrics": MetricRecord(values), "info": ConfigRecord({"factory": factory})})


def factory_of(msg: Message) -> str:
    """The factory name a reply carries."""
    return str(msg.content.config_records["info"]["factory"])


def reply_arrays(msg: Message) -> ArrayRecord | None:
    return msg.content.array_records.get("arrays")


def reply_metric(msg: Message, key: str) -> float:
    return float(msg.content.metric_records["metrics"][key])


def received_hash(msg: Message) -> str:
    return str(msg.content.config_records["info"]["received-hash"])


def section_metrics(msg: Message) -> list[SectionMetrics]:
    """The per-section metric values of an evaluate reply."""
    values = msg.content.metric_records["metrics"]
    sections = []
    for key in values:
        if key.endswith("/auc_source"):
            prefix = key[: -len("/auc_source")]
            machine, section = prefix.rsplit("/", 1)
            sections.append(
                SectionMetrics(
                    machine,
                    section,
                    float(values[f"{prefix}/auc_source"]),
                    float(values[f"{prefix}/auc_target"]),
                    float(values[f"{prefix}/pauc"]),
                    int(values[f"{prefix}/n_clips"]),
                    int(values[f"{prefix}/n_anomalies"]),
                )
            )
    return sections
