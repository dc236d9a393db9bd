"""Self-describing checkpoints: ``{"cfg": dict, "model": state_dict, "meta": dict}``, and where
an encoder starts (an official BEATs file, the shipped pre-trained backbone, or random init).

The official BEATs files have the same ``cfg`` + ``model`` form, so loading is always:
config -> model -> load_state_dict(strict) -> eval.

Integrity: every torch file coopasd writes is *sealed*: the sha256 of all its bytes is stored as the
comment of its zip archive (:func:`seal`), so the file stays an ordinary ``torch.load``-able
checkpoint (official BEATs code reads it too). :func:`load_torch_file` reads the bytes once, checks
the seal before anything is deserialized, and deserializes those same bytes with
``weights_only=True`` (tensors and plain data only: nothing in a file can run code). A truncated,
bit-flipped or edited file is one clear :class:`CheckpointError` naming it. Files that must come from
coopasd (factory models, federated state) require the seal; encoder checkpoints may lack it (official
BEATs files have none). The seal detects damage and edits, not a forger who recomputes it: keep model
files where only the plant can write.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import struct
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coopasd.config.settings import ModelConfig
from coopasd.errors import ConfigError, CoopasdError
from coopasd.model.beats import BEATs
from coopasd.model.beats_config import BEATsConfig, preset

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).parent.parent / "weights" / "tiny_pretrained.pt"  # the shipped backbone


class CheckpointError(CoopasdError):
    """A checkpoint file is missing, truncated, not a checkpoint, altered, or does not fit the model."""


SEAL_PREFIX = b"coopasd-seal/1 sha256:"  # the zip comment of a sealed file, then 64 hex digits
SEAL_LENGTH = len(SEAL_PREFIX) + 64
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record (22 bytes + comment)


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def seal(data: bytes) -> bytes:
    """``data`` (a ``torch.save`` zip archive without comment) with the sha256 of its bytes as the zip comment."""
    if len(data) < 22 or data[-22:-18] != _EOCD or data[-2:] != b"\x00\x00":
        raise ValueError("seal() needs the bytes of a torch.save archive (a zip file without comment)")
    digest = hashlib.sha256(data[:-2]).hexdigest().encode()
    return data[:-2] + struct.pack("<H", SEAL_LENGTH) + SEAL_PREFIX + digest


def torch_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` as sealed bytes (what every torch file coopasd writes holds)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return seal(buffer.getvalue())


def check_seal(raw: bytes, path: Path | str) -> bool:
    """True when ``raw`` carries a seal that matches its bytes, False when it carries none.

    Raises :class:`CheckpointError` naming ``path`` when the seal does not match (a changed or damaged file).
    """
    if len(raw) < SEAL_LENGTH + 22 or not raw[-SEAL_LENGTH:].startswith(SEAL_PREFIX):
        return False
    recorded = raw[-64:].decode("ascii", "replace")
    if raw[-SEAL_LENGTH - 2 : -SEAL_LENGTH] != struct.pack("<H", SEAL_LENGTH):
        raise CheckpointError(f"{path}: its checksum record is damaged; the file was changed after it was written")
    actual = hashlib.sha256(raw[: -SEAL_LENGTH - 2]).hexdigest()
    if actual != recorded:
        raise CheckpointError(
            f"{path}: checksum mismatch (sha256 {actual[:12]}..., recorded {recorded[:12]}...): the file was "
            "truncated, damaged or changed after coopasd wrote it; do not use it"
        )
    return True


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def load_torch_file(path: Path, what: str = "checkpoint", require_seal: bool = False) -> Any:
    """Read ``path`` once, check its seal, then ``torch.load`` those bytes with ``weights_only=True``.

    ``require_seal``: a file without a seal is an error (files only coopasd writes). Every problem is
    one :class:`CheckpointError` line naming the file and ``what`` it should be.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} file does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the {what} file ({err.strerror or err})") from err
    if not raw:
        raise CheckpointError(f"{path}: {what} file is empty (0 bytes)")
    if not check_seal(raw, path) and require_seal:
        raise CheckpointError(
            f"{path}: {what} file carries no coopasd checksum: it is truncated, was altered, or was not written "
            "by coopasd"
        )
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files; all mean the same to the user
        text = str(err).lower()
        if isinstance(err, pickle.UnpicklingError) and ("weights only" in text or "unsupported global" in text):
            problem = "refused: it holds Python objects other than tensors and plain data (nothing in it was run)"
        else:
            problem = "not readable (truncated or corrupt?)"
        raise CheckpointError(f"{path}: {what} file {problem}: {_first_line(err)}") from err


def read_checkpoint(path: Path, require_seal: bool = False) -> dict[str, Any]:
    """A ``{"cfg", "model", ...}`` checkpoint dict (see :func:`load_torch_file`), with clear errors."""
    path = Path(path)
    payload = load_torch_file(path, "checkpoint", require_seal)
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
    """The serialized, sealed ``{"cfg", "model", "meta"}`` dict (what :mod:`coopasd.rundir.writer` writes to disk)."""
    payload = {"cfg": cfg, "model": {k: v.detach().cpu().clone() for k, v in model.items()}, "meta": meta or {}}
    return torch_bytes(payload)


def verify_shipped_backbone(path: Path = DEFAULT_CHECKPOINT) -> None:
    """The shipped backbone's sha256 must match its record (``tiny_pretrained.json``) before it is used."""
    record = Path(path).with_suffix(".json")
    try:
        expected = str(json.loads(record.read_text())["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{record}: the shipped backbone's record is missing or unreadable ({err})") from err
    actual = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"{path}: sha256 {actual[:12]}... does not match its record {record.name} ({expected[:12]}...): the "
            "shipped backbone is damaged or was replaced; reinstall coopasd"
        )


def check_encoder_settings(encoder: BEATs, cfg: ModelConfig, origin: str) -> None:
    """``[model] layer`` and ``lora_rank`` must fit the encoder (known only once it is loaded)."""
    depth = encoder.cfg.encoder_layers
    if cfg.layer >= depth:
        raise ConfigError(
            f"[model] layer = {cfg.layer}: the encoder ({origin}) has {depth} layers: use 0..{depth - 1}, "
            "or -1 for the last"
        )
    width = encoder.cfg.encoder_embed_dim
    if cfg.lora_rank > width:
        raise ConfigError(f"[model] lora_rank = {cfg.lora_rank}: larger than the encoder's width {width}")


def load_beats(path: Path | str) -> BEATs:
    """Load an official BEATs checkpoint or one of ours (strict key match), in eval mode."""
    cfg, state = read_beats_checkpoint(Path(path))
    model = BEATs(cfg)
    load_state_strict(model, state, Path(path))
    return model.eval()


def initial_encoder(cfg: ModelConfig, seed: int = 0, quiet: bool = False) -> tuple[BEATs, str]:
    """The starting encoder and a sentence saying where it came from (for the log and the report;
    a random start is logged as a warning unless ``quiet``: a settings check before the run)."""
    if cfg.checkpoint == "pretrained":
        if not DEFAULT_CHECKPOINT.exists():
            raise CheckpointError(f"{DEFAULT_CHECKPOINT}: the shipped pre-trained backbone is missing")
        verify_shipped_backbone()
        encoder, origin = (
            load_beats(DEFAULT_CHECKPOINT),
            f"shipped pre-trained tiny backbone ({DEFAULT_CHECKPOINT.name})",
        )
    elif cfg.checkpoint in ("", "none"):
        torch.manual_seed(seed)
        encoder = BEATs(preset(cfg.preset))
        origin = f"random initialization of the '{cfg.preset}' preset (no checkpoint: expect near-chance features)"
    else:
        encoder, origin = load_beats(Path(cfg.checkpoint)), f"checkpoint {cfg.checkpoint}"
    check_encoder_settings(encoder, cfg, f"[model] checkpoint = {cfg.checkpoint!r}")
    if cfg.checkpoint in ("", "none") and not quiet:
        log.warning("encoder starts from %s", origin)
    if cfg.lora_rank:
        encoder.add_lora(cfg.lora_rank)
    return encoder, origin
