"""Shared class centres for factories whose own auxiliary task is degenerate (``[train] class_table = "shared"``).

A factory that runs one unit, with few clips and maybe no attributes, has a single class of its
own: a margin head over it learns nothing. With the shared table every factory classifies its
clips among ALL the partition's units (``machine/section``, or a whole machine type, as
``[partition] factories`` names them; every factory's run config holds it) against fixed, mutually
orthogonal class centres derived from the run seed. The other factories' units are the negatives a
lone unit lacks, the shared encoder learns to tell every unit apart, and nothing about classes
crosses the wire (the fixed-classifier route of FedETF, Li et al. 2023, in place of FedAwS's
server-side spreading of trained class embeddings, Yu et al. 2020).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from coopasd.data.layout import Clip
from coopasd.errors import ConfigError
from coopasd.model.heads import ArcFace


def partition_classes(spec: str) -> list[str]:
    """The classes of the shared table: every member of the factory spec, in spec order, once."""
    members = [m.strip() for part in spec.split(";") if "=" in part for m in part.split("=", 1)[1].split("+")]
    classes = list(dict.fromkeys(m for m in members if m))
    if not classes:
        raise ConfigError('[train] class_table = "shared" needs [partition] factories (the units to classify)')
    return classes


def shared_labels(clips: Sequence[Clip], classes: Sequence[str]) -> np.ndarray:
    """``(n,)`` class ids of ``clips`` in ``classes``: its unit ``machine/section``, else its machine type."""
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for clip in clips:
        key = f"{clip.machine_type}/{clip.section}"
        if key not in index and clip.machine_type not in index:
            raise ConfigError(f"{clip.path}: unit {key} is not in [partition] factories")
        out.append(index.get(key, index.get(clip.machine_type)))
    return np.array(out, dtype=np.int64)


def fix_centres(head: ArcFace, seed: int) -> None:
    """Replace ``head``'s class centres ``(n_classes, dim)`` by fixed orthonormal rows (the same in
    every factory for the same seed and shape) and stop them from training."""
    n, dim = head.weight.shape
    gen = torch.Generator().manual_seed(seed + 7919)
    table = torch.randn(max(n, dim), dim, generator=gen)
    rows = torch.linalg.qr(table.T).Q.T[:n] if n <= dim else torch.nn.functional.normalize(table[:n], dim=1)
    with torch.no_grad():
        head.weight.copy_(rows)
    head.weight.requires_grad_(False)
