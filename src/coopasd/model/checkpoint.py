"""Self-describing checkpoints: ``{"cfg": dict, "model": state_dict, "meta": dict}``.

The official BEATs files have the same ``cfg`` + ``model`` form, so loading is always:
config -> model -> load_state_dict(strict) -> eval.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coopasd.atomic import write_atomic
from coopasd.errors import CoopasdError
from coopasd.model.beats import BEATsConfig


class CheckpointError(CoopasdError):
    """A checkpoint file is missing, truncated, not a checkpoint, or does not fit the model."""


def read_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load`` a checkpoint dict (tensors and plain data only), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint (truncated or corrupt?): {err}") from err
    if not isinstance(payload, dict) or "model" not in payload or "cfg" not in payload:
        keys = sorted(payload)[:6] if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: expected a dict with 'cfg' and 'model', found {keys}")
    if not isinstance(payload["model"], dict) or not isinstance(payload["cfg"], dict):
        raise CheckpointError(f"{path}: 'cfg' and 'model' must both be dicts")
    return payload


def read_beats_checkpoint(path: Path) -> tuple[BEATsConfig, dict[str, torch.Tensor]]:
    """Config and encoder state dict of an official BEATs file or of one of our encoder files."""
    payload = read_checkpoint(path)
    try:
        cfg = BEATsConfig.from_dict(payload["cfg"])
    except TypeError as err:
        raise CheckpointError(f"{path}: 'cfg' does not describe a BEATs model ({err})") from err
    return cfg, payload["model"]


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)`` with an error that lists what is missing or unexpected."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        raise CheckpointError(f"{path}: checkpoint does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def save_checkpoint(path: Path, cfg: dict[str, Any], model: dict[str, torch.Tensor], meta: dict | None = None) -> Path:
    """Write ``{"cfg", "model", "meta"}`` atomically."""
    buffer = io.BytesIO()
    payload = {"cfg": cfg, "model": {k: v.detach().cpu().clone() for k, v in model.items()}, "meta": meta or {}}
    torch.save(payload, buffer)
    return write_atomic(Path(path), buffer.getvalue())
