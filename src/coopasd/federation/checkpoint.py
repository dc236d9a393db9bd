"""What a federated run keeps between rounds, written atomically: the server's global checkpoints
and each factory's local state.

Server: one file per round (``round_NNN.pt``, the last ``[federation] keep_checkpoints`` of them kept)
plus ``latest.pt``: the shared parameters, the round, the strategy's state, the run config,
per-round history and a hash over all of them.
Factory: after each round it trained, its margin head, class names and non-shared parameters
(``local/round_NNN.pt`` in its own folder); they never leave the factory.

Both are sealed files (:func:`coopasd.model.checkpoint.seal`): a truncated, damaged or edited file
is a :class:`~coopasd.model.checkpoint.CheckpointError` naming it when a run resumes, never a
silent fallback.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from coopasd.atomic import write_atomic
from coopasd.model.checkpoint import CheckpointError, load_torch_file, torch_bytes


def params_hash(params: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(params):
        digest.update(key.encode())
        digest.update(params[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    """Hash any nest of dicts, lists, tensors and plain values (keys sorted, tensors by dtype, shape and bytes)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(b"D")
        for key in sorted(value, key=str):
            digest.update(repr(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(json.dumps(value, sort_keys=True, default=repr).encode())


def state_hash(**parts: Any) -> str:
    """sha256 over every part of a checkpoint (parameters, strategy state, round, config, history)."""
    digest = hashlib.sha256()
    _feed(digest, parts)
    return digest.hexdigest()


@dataclass
class GlobalCheckpoint:
    """What a resumed run needs to continue exactly where the last completed round left off."""

    round: int
    params: dict[str, torch.Tensor]
    strategy_state: dict
    config_toml: str
    history: list[dict] = field(default_factory=list)

    def content_hash(self) -> str:
        """A hash over everything the checkpoint holds, not only the parameters."""
        return state_hash(
            round=self.round,
            params=self.params,
            strategy_state=self.strategy_state,
            config_toml=self.config_toml,
            history=self.history,
        )

    def save(self, folder: Path, keep: int = -1) -> Path:
        """Write ``round_NNN.pt`` and ``latest.pt``, then delete all but the last ``keep`` round files (-1: all)."""
        payload = {
            "round": self.round,
            "params": self.params,
            "strategy_state": self.strategy_state,
            "config_toml": self.config_toml,
            "history": self.history,
            "params_hash": params_hash(self.params),
            "hash": self.content_hash(),
        }
        data = torch_bytes(payload)
        write_atomic(folder / f"round_{self.round:03d}.pt", data)
        latest = write_atomic(folder / "latest.pt", data)
        if keep >= 0:
            rounds = sorted(Path(folder).glob("round_[0-9]*.pt"), key=lambda p: int(p.stem.removeprefix("round_")))
            for old in rounds[: max(0, len(rounds) - keep)]:
                old.unlink(missing_ok=True)
        return latest

    @classmethod
    def load(cls, path: Path) -> GlobalCheckpoint:
        """Read and verify a global checkpoint: its seal (when present) and the hash over all its content."""
        payload = load_torch_file(Path(path), "global checkpoint")
        keys = ("round", "params", "strategy_state", "config_toml", "history", "hash")
        if not isinstance(payload, dict) or any(k not in payload for k in keys):
            raise CheckpointError(f"{path}: not a coopasd global checkpoint (expected keys {', '.join(keys)})")
        try:
            ckpt = cls(
                int(payload["round"]),
                dict(payload["params"]),
                dict(payload["strategy_state"]),
                str(payload["config_toml"]),
                list(payload["history"]),
            )
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: not a coopasd global checkpoint ({err})") from err
        if ckpt.content_hash() != payload["hash"]:
            raise CheckpointError(
                f"{path}: global checkpoint is corrupt (hash mismatch over parameters, strategy state and history)"
            )
        _require_finite(path, "global checkpoint", [ckpt.params, ckpt.strategy_state])
        return ckpt


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def _require_finite(path: Path, what: str, parts: list[Any]) -> None:
    for tensor in _tensors(parts):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: the {what} holds NaN or infinite values")


def completed_rounds(run_dir: Path) -> int:
    """Rounds already in ``run_dir``'s latest global checkpoint (0 when there is none)."""
    latest = Path(run_dir) / "checkpoints" / "latest.pt"
    return GlobalCheckpoint.load(latest).round if latest.exists() else 0


@dataclass
class LocalState:
    """A factory's own state after a round: margin head, its class names, non-shared parameters."""

    head: dict | None
    classes: list[str]
    local_params: dict[str, torch.Tensor]

    @staticmethod
    def path(work_dir: Path, server_round: int) -> Path:
        return Path(work_dir) / "local" / f"round_{server_round:03d}.pt"

    def save(self, work_dir: Path, server_round: int) -> Path:
        payload = {"head": self.head, "classes": self.classes, "local_params": self.local_params}
        return write_atomic(self.path(work_dir, server_round), torch_bytes(payload))

    @classmethod
    def read(cls, path: Path) -> LocalState:
        """One saved local state; an empty, truncated, altered or foreign file is a CheckpointError naming it."""
        payload = load_torch_file(Path(path), "factory local state", require_seal=True)
        if not isinstance(payload, dict) or any(k not in payload for k in ("head", "classes", "local_params")):
            raise CheckpointError(f"{path}: not a factory local state (expected head, classes and local_params)")
        state = cls(payload["head"], [str(c) for c in payload["classes"]], dict(payload["local_params"]))
        _require_finite(Path(path), "factory local state", [state.head, state.local_params])
        return state

    @classmethod
    def latest(cls, work_dir: Path, before_round: int) -> LocalState | None:
        """The state saved after the factory's last round before ``before_round`` (None if it has none)."""
        for r in range(before_round - 1, 0, -1):
            path = cls.path(work_dir, r)
            if path.exists():
                return cls.read(path)
        return None


def verify_local_states(factory_dirs: Iterable[Path]) -> int:
    """Read every saved local state under ``factory_dirs`` (before a run resumes); returns how many.

    A bad file is a :class:`CheckpointError` naming it, raised here, before any round starts, instead
    of making that factory fail (and be left out of) the resumed rounds.
    """
    count = 0
    for folder in factory_dirs:
        for path in sorted((Path(folder) / "local").glob("round_*.pt")):
            LocalState.read(path)
            count += 1
    return count


__all__ = [
    "GlobalCheckpoint",
    "LocalState",
    "completed_rounds",
    "params_hash",
    "state_hash",
    "verify_local_states",
]
