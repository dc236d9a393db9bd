"""Global checkpoints of a federated run, written atomically every round.

One file per round (``round_NNN.pt``) plus ``latest.pt``: the shared parameters, the round,
the strategy's state, the run config, per-round history and a hash of the parameters.
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

    def save(self, folder: Path) -> Path:
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
        return write_atomic(folder / "latest.pt", data)

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
