"""Margin heads for the auxiliary classification task (kept local to each factory)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ArcFace(nn.Module):
    """Additive angular margin softmax (Deng et al., 2019).

    ``logits = scale * cos(theta_y + margin)`` for the true class, ``scale * cos(theta_j)`` otherwise;
    embeddings and class centres are L2-normalized, so classes separate by angle.
    """

    def __init__(self, in_dim: int, n_classes: int, margin: float = 0.2, scale: float = 30.0, seed: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_dim))
        nn.init.xavier_uniform_(self.weight, generator=torch.Generator().manual_seed(seed))
        self.margin = margin
        self.scale = scale

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(batch, in_dim)`` -> cosine to every class centre ``(batch, n_classes)``."""
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Margin logits ``(batch, n_classes)``; ``labels`` ``(batch,)`` or soft ``(batch, n_classes)`` (mixup)."""
        cos = self.cosine(embeddings).clamp(-1 + 1e-7, 1 - 1e-7)
        target = labels if labels.dim() == 2 else F.one_hot(labels, cos.shape[1]).to(cos.dtype)
        theta = torch.acos(cos)
        with_margin = torch.cos(torch.clamp(theta + self.margin, max=math.pi))
        return self.scale * (target * with_margin + (1 - target) * cos)
