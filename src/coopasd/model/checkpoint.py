"""Self-describing checkpoints: ``{"cfg": dict, "model": state_dict, "meta": dict}``, and where
an encoder starts (an official BEATs file, the shipped pre-trained backbone, or random init).

The official BEATs files have the same ``cfg`` + ``model`` form, so loading is always:
config -> model -> load_state_dict(strict) -> eval.
"""

from __future__ import annotations

import io
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coopasd.config import ModelConfig
from coopasd.errors import CoopasdError
from coopasd.model.beats import BEATs, BEATsConfig, preset

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).parent.parent / "weights" / "tiny_pretrained.pt"  # the shipped backbone


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


def checkpoint_bytes(cfg: dict[str, Any], model: dict[str, torch.Tensor], meta: dict | None = None) -> bytes:
    """The serialized ``{"cfg", "model", "meta"}`` dict (what :mod:`coopasd.report` writes to disk)."""
    buffer = io.BytesIO()
    payload = {"cfg": cfg, "model": {k: v.detach().cpu().clone() for k, v in model.items()}, "meta": meta or {}}
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_beats(path: Path | str) -> BEATs:
    """Load an official BEATs checkpoint or one of ours (strict key match), in eval mode."""
    cfg, state = read_beats_checkpoint(Path(path))
    model = BEATs(cfg)
    load_state_strict(model, state, Path(path))
    return model.eval()


def initial_encoder(cfg: ModelConfig, seed: int = 0) -> tuple[BEATs, str]:
    """The starting encoder and a sentence saying where it came from (for the log and the report)."""
    if cfg.checkpoint == "pretrained":
        if not DEFAULT_CHECKPOINT.exists():
            raise CheckpointError(f"{DEFAULT_CHECKPOINT}: the shipped pre-trained backbone is missing")
        encoder, origin = (
            load_beats(DEFAULT_CHECKPOINT),
            f"shipped pre-trained tiny backbone ({DEFAULT_CHECKPOINT.name})",
        )
    elif cfg.checkpoint in ("", "none"):
        torch.manual_seed(seed)
        encoder = BEATs(preset(cfg.preset))
        origin = f"random initialization of the '{cfg.preset}' preset (no checkpoint: expect near-chance features)"
        log.warning("encoder starts from %s", origin)
    else:
        encoder, origin = load_beats(Path(cfg.checkpoint)), f"checkpoint {cfg.checkpoint}"
    if cfg.lora_rank:
        encoder.add_lora(cfg.lora_rank)
    return encoder, origin
