"""Which encoder parameters cross the wire, and their conversion to/from Flower ArrayRecords.

What is shared is a choice (``[federation] share``):
- ``encoder``: every encoder parameter and buffer;
- ``no_norm``: all but the LayerNorm weights and biases, which stay local (FedBN-style);
- ``lora``: only the LoRA adapters (the frozen backbone never travels).
The margin head is never shared: each factory's label space is its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from flwr.app import ArrayRecord
from torch import nn

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
    import copy

    def size(model: nn.Module, share: Share) -> int:
        state = model.state_dict()
        return sum(state[k].numel() * state[k].element_size() for k in shared_keys(model, share))

    with_lora = copy.deepcopy(encoder)
    with_lora.add_lora(lora_rank)  # type: ignore[operator]
    return {"full_encoder": size(encoder, "encoder"), f"lora_rank_{lora_rank}": size(with_lora, "lora")}
