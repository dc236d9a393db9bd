"""Where a run's numbers come from: the data tree (path and a one-line description) and the versions of
Python and the packages it ran with, as recorded in ``metrics.json``."""

from __future__ import annotations

import json
from pathlib import Path


def describe_data(data_dir: Path) -> str:
    """One line about where a data tree comes from: the synthetic generator's settings, or the DCASE layout."""
    manifest = Path(data_dir) / "synth.json"
    if manifest.is_file():
        try:
            cfg = json.loads(manifest.read_text())["config"]
            return (
                f"synthetic factories (coopasd synth, seed {cfg['seed']}, {cfg['seconds']:g} s clips, "
                f"difficulty {cfg['difficulty']:g})"
            )
        except (OSError, KeyError, TypeError, ValueError):
            pass
    return "a DCASE 2023 Task 2 data tree"


def data_keys(data_dir: Path) -> dict:
    """The ``metrics.json`` keys naming the data tree whose labels the metrics come from."""
    return {"data": str(Path(data_dir).resolve()), "data_source": describe_data(data_dir)}
