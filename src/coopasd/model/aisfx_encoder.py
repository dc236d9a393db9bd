"""The aiSFX CNN as a trainable encoder (``[model] backbone = "aisfx"``): only its top block(s) learn.

The shipped aiSFX weights (:mod:`coopasd.model.aisfx`, verified by sha256) give every block; the
front-end and the lower ``4 - train_blocks`` blocks stay frozen and live *outside* the state dict,
so ``state_dict()`` holds exactly the trainable tensors: the top blocks' conv weights and their
BatchNorm scales and shifts (keys ``blocks.{i}.*``, ``i`` the block's index in aiSFX). That is what a
factory model file stores and, with ``[federation] share = "encoder"``, what crosses the wire.

BatchNorm statistics are frozen (the published running mean and variance, eval-mode arithmetic, in
training too): a factory holds about 100 normal clips, too few for stable batch statistics, and
frozen statistics keep the pre-trained features' scale, so a factory's model equals the shared one
plus its own training only. Training never runs the frozen part more than once per clip:
:meth:`AisfxEncoder.lower_maps` gives the cached input of the trainable blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from coopasd.model.aisfx import DEFAULT_WEIGHTS, AisfxCNN, AisfxConfig, clip_pool, load_aisfx


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics (non-persistent buffers) and a trainable affine ``weight`` / ``bias``."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.eps = bn.eps
        self.weight = nn.Parameter(bn.weight.detach().clone())
        self.bias = nn.Parameter(bn.bias.detach().clone())
        self.register_buffer("running_mean", bn.running_mean.detach().clone(), persistent=False)
        self.register_buffer("running_var", bn.running_var.detach().clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, channels, time, freq)`` normalized per channel with the frozen statistics."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


class AisfxEncoder(nn.Module):
    """aiSFX encoder with its top ``train_blocks`` conv blocks trainable: ``(batch, samples)`` -> ``(batch, 512)``.

    ``cfg`` is the aiSFX config; ``weights_sha256`` names the shipped weights the frozen part comes from.
    """

    frozen: AisfxCNN  # front-end + lower blocks, eval mode, no gradients; deliberately not a registered submodule

    def __init__(self, cnn: AisfxCNN, train_blocks: int, weights_sha256: str) -> None:
        super().__init__()
        n = len(cnn.blocks)
        if not 1 <= train_blocks <= n:
            raise ValueError(f"train_blocks = {train_blocks}: the aiSFX CNN has {n} blocks (use 1..{n})")
        self.cfg: AisfxConfig = cnn.cfg
        self.train_blocks = train_blocks
        self.weights_sha256 = weights_sha256
        self.first_trained = n - train_blocks
        top = {}
        for i in range(self.first_trained, n):
            block = cnn.blocks[i]
            block.bn1, block.bn2 = FrozenBatchNorm2d(block.bn1), FrozenBatchNorm2d(block.bn2)
            top[str(i)] = block
        self.blocks = nn.ModuleDict(top)
        cnn.blocks = nn.ModuleList(cnn.blocks[: self.first_trained])
        cnn.requires_grad_(False)
        object.__setattr__(self, "frozen", cnn.eval())  # not a submodule: never in state_dict() or parameters()

    @property
    def embedding_dim(self) -> int:
        return self.cfg.channels[-1]

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        self.frozen._apply(fn, recurse)  # .to(device) / .float() move the frozen part too
        return super()._apply(fn, recurse)

    @property
    def min_frames(self) -> int:
        """Fewest time steps of :meth:`lower_maps` that the trainable blocks accept."""
        size = 1
        for block in self.blocks.values():
            size *= block.pool
        return size

    @torch.no_grad()
    def lower_maps(self, waves: torch.Tensor) -> torch.Tensor:
        """Frozen front-end + lower blocks: ``(batch, samples)`` -> ``(batch, channels, time, freq)`` (no graph)."""
        x = self.frozen.features(waves).unsqueeze(1)
        for block in self.frozen.blocks:
            x = block(x)
        return x

    def top_embedding(self, maps: torch.Tensor) -> torch.Tensor:
        """Trainable blocks + aiSFX clip pooling: :meth:`lower_maps` output -> ``(batch, 512)``."""
        x = maps
        for block in self.blocks.values():
            x = block(x)
        return clip_pool(x)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """The (tuned) aiSFX embedding ``(batch, 512)`` of ``(batch, samples)`` waveforms at 16 kHz."""
        return self.top_embedding(self.lower_maps(waves))


def aisfx_encoder(train_blocks: int = 1, expected_sha256: str | None = None) -> AisfxEncoder:
    """The shipped aiSFX weights (checked against their record, or ``expected_sha256``) as a trainable encoder."""
    from coopasd.model.aisfx import expected_weights_sha256

    sha = expected_sha256 or expected_weights_sha256(DEFAULT_WEIGHTS)
    return AisfxEncoder(load_aisfx(DEFAULT_WEIGHTS, expected_sha256=sha), train_blocks, sha)


def crop_maps(maps: torch.Tensor, frames: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``frames``-long time crop per clip of ``(batch, ch, time, freq)`` maps (whole map if shorter)."""
    total = maps.shape[2]
    if frames >= total:
        return maps
    starts = torch.randint(0, total - frames + 1, (maps.shape[0],), generator=generator)
    return torch.stack([m[:, s : s + frames] for m, s in zip(maps, starts.tolist(), strict=True)])


def mask_maps(maps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """SpecAugment on feature maps: one time mask (up to 1/5 of the steps) and one frequency mask (up to 1/8
    of the bins) per clip, set to each channel's mean. ``(batch, ch, time, freq)``."""
    out = maps.clone()
    _, _, steps, bins = out.shape
    fill = out.mean(dim=(2, 3), keepdim=True)
    for i in range(out.shape[0]):
        t = int(torch.randint(0, max(1, steps // 5) + 1, (1,), generator=generator))
        f = int(torch.randint(0, max(1, bins // 8) + 1, (1,), generator=generator))
        t0 = int(torch.randint(0, max(1, steps - t), (1,), generator=generator))
        f0 = int(torch.randint(0, max(1, bins - f), (1,), generator=generator))
        out[i, :, t0 : t0 + t, :] = fill[i]
        out[i, :, :, f0 : f0 + f] = fill[i]
    return out
