"""What a federated run keeps between rounds, written atomically: the server's global checkpoints
and each factory's local state.

Server: one file per round (``round_NNN.pt``, the last ``[federation] keep_checkpoints`` of them kept)
plus ``latest.pt``: the shared parameters, the round, the strategy's state, the run config,
per-round history and a hash of the parameters.
Factory: after each round it trained, its margin head, class names and non-shared parameters
(``local/round_NNN.pt`` in its own folder); they never leave the factory.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import torch

from coopasd.atomic import write_atomic
from coopasd.errors import CoopasdError


def params_hash(params: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(params):
        digest.update(key.encode())
        digest.update(params[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class GlobalCheckpoint:
    """What a resumed run needs to continue exactly where the last completed round left off."""

    round: int
    params: dict[str, torch.Tensor]
    strategy_state: dict
    config_toml: str
    history: list[dict] = field(default_factory=list)

    def save(self, folder: Path, keep: int = -1) -> Path:
        """Write ``round_NNN.pt`` and ``latest.pt``, then delete all but the last ``keep`` round files (-1: all)."""
        payload = {
            "round": self.round,
            "params": self.params,
            "strategy_state": self.strategy_state,
            "config_toml": self.config_toml,
            "history": self.history,
            "hash": params_hash(self.params),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
        write_atomic(folder / f"round_{self.round:03d}.pt", data)
        latest = write_atomic(folder / "latest.pt", data)
        if keep >= 0:
            rounds = sorted(Path(folder).glob("round_[0-9]*.pt"), key=lambda p: int(p.stem.removeprefix("round_")))
            for old in rounds[: max(0, len(rounds) - keep)]:
                old.unlink(missing_ok=True)
        return latest

    @classmethod
    def load(cls, path: Path) -> GlobalCheckpoint:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the same problem to the user
            raise CoopasdError(f"{path}: cannot read the global checkpoint ({err})") from err
        if params_hash(payload["params"]) != payload["hash"]:
            raise CoopasdError(f"{path}: global checkpoint is corrupt (parameter hash mismatch)")
        return cls(
            payload["round"],
            payload["params"],
            payload["strategy_state"],
            payload["config_toml"],
            list(payload["history"]),
        )


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
        buffer = io.BytesIO()
        torch.save({"head": self.head, "classes": self.classes, "local_params": self.local_params}, buffer)
        return write_atomic(self.path(work_dir, server_round), buffer.getvalue())

    @classmethod
    def latest(cls, work_dir: Path, before_round: int) -> LocalState | None:
        """The state saved after the factory's last round before ``before_round`` (None if it has none)."""
        for r in range(before_round - 1, 0, -1):
            path = cls.path(work_dir, r)
            if path.exists():
                try:
                    payload = torch.load(path, map_location="cpu", weights_only=True)
                except Exception as err:  # noqa: BLE001 - any unreadable file is the same problem to the user
                    raise CoopasdError(f"{path}: cannot read this factory's local state ({err})") from err
                return cls(payload["head"], list(payload["classes"]), payload["local_params"])
        return None
