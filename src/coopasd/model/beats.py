"""BEATs (Chen et al., 2022): a ViT over 16x16 patches of the 128-bin Kaldi log-mel fbank.

Our implementation of the architecture; official checkpoints (``torch.load`` gives a dict with
``cfg`` and ``model``, e.g. BEATs_iter3, BEATs_iter3_plus_AS2M) load with ``strict=True``.
Public API: :func:`load_beats` and :meth:`BEATs.extract_features`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from coopasd.data.features import beats_fbank
from coopasd.model.backbone import (
    PATHS,
    ComputePath,
    LoRALinear,
    MultiheadAttention,
    PositionalConv,
    TransformerEncoder,
    linear,
    onednn_usable,
)
from coopasd.model.beats_config import BEATsConfig

Pooling = Literal["mean", "mean_freq"]


class BEATs(nn.Module):
    """The BEATs encoder with the fbank inside: 16 kHz waveforms in, patch features out."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Conv2d(
            1, cfg.embed_dim, cfg.input_patch_size, stride=cfg.input_patch_size, bias=cfg.conv_bias
        )
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.post_extract_proj = (
            nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim) if cfg.embed_dim != cfg.encoder_embed_dim else None
        )
        self.encoder = TransformerEncoder(cfg)
        if cfg.finetuned_model:
            self.predictor = nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class)

    @property
    def freq_patches(self) -> int:
        """Patches along the mel axis (128 / patch size = 8 for BEATs)."""
        return 128 // self.cfg.input_patch_size

    @staticmethod
    def forward_padding_mask(features: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
        """Reduce a ``(batch, n)`` padding mask to ``features.size(1)`` positions (all-padding groups)."""
        extra = padding_mask.size(1) % features.size(1)
        if extra > 0:
            padding_mask = padding_mask[:, :-extra]
        return padding_mask.view(padding_mask.size(0), features.size(1), -1).all(-1)

    def patches(
        self,
        waveforms: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        fbank_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        """Projected patch embeddings ``(batch, patches, dim)`` and the patch-level padding mask.

        ``fbank_transform`` (training only) edits the normalized fbank, e.g. SpecAugment masks.
        """
        fbank = beats_fbank(waveforms)  # (batch, frames, 128)
        if fbank_transform is not None:
            fbank = fbank_transform(fbank)
        if padding_mask is not None:
            padding_mask = self.forward_padding_mask(fbank, padding_mask)
        fast = self.encoder.layers[0].self_attn.path == "fast"
        if fast:
            x = patch_matmul(fbank, self.patch_embedding)
        else:
            x = self.patch_embedding(fbank.unsqueeze(1)).flatten(2).transpose(1, 2)  # (batch, frames/16 * 8, embed)
        x = self.layer_norm(x)  # time-major patch order
        if padding_mask is not None:
            padding_mask = self.forward_padding_mask(x, padding_mask)
        if self.post_extract_proj is not None:
            onednn = fast and onednn_usable(x)
            x = linear(self.post_extract_proj, x, onednn)
        return F.dropout(x, p=self.cfg.dropout_input, training=self.training), padding_mask

    def extract_features(
        self,
        waveforms: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        return_layers: bool = False,
        fbank_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        num_layers: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        """Last-layer features of 16 kHz waveforms.

        Args:
            waveforms: ``(batch, samples)`` float audio in [-1, 1].
            padding_mask: ``(batch, samples)`` bool, True where a sample is padding.
            return_layers: also return every layer's ``(batch, patches, dim)`` output.
            num_layers: run only the first ``num_layers`` layers (features are then that layer's output).
        Returns:
            ``(features (batch, patches, dim), patch padding mask or None[, layers])``, where
            patches = (frames // 16) * 8 in time-major order.
        """
        x, mask = self.patches(waveforms, padding_mask, fbank_transform)
        x, layers = self.encoder(x, mask, return_layers, num_layers)
        return (x, mask, layers) if return_layers else (x, mask)

    def layer_features(
        self,
        waveforms: torch.Tensor,
        layer: int = -1,
        fbank_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One layer's features ``(batch, patches, dim)`` (``-1``: the encoder's output) and the
        padding mask; the layers after ``layer`` are not run."""
        n = self.cfg.encoder_layers
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} does not exist: the encoder has {n} layers (0..{n - 1} or -1)")
        index = layer % n
        if layer == -1 or (index == n - 1 and not self.cfg.layer_norm_first):
            return self.extract_features(waveforms, fbank_transform=fbank_transform)
        _, mask, layers = self.extract_features(
            waveforms, return_layers=True, fbank_transform=fbank_transform, num_layers=index + 1
        )
        return layers[index], mask

    def set_path(self, path: ComputePath) -> BEATs:
        """How the layers compute (same results within float32 rounding): ``fast`` (default; fused
        attention, the patch embedding as one matmul, and on CPU the positional convolution through the
        FFT and, in float32 inference, oneDNN's fused linear kernels, q/k/v in one matmul and the
        attention clip by clip in a reused buffer), ``sdpa`` (fused attention only: portable, for
        tracing and ONNX export) or ``plain`` (the reference's arithmetic)."""
        if path not in PATHS:
            raise ValueError(f"path '{path}' is not one of {', '.join(PATHS)}")
        for module in self.modules():
            if isinstance(module, MultiheadAttention | PositionalConv):
                module.path = path
        return self

    def predict(self, waveforms: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """AudioSet class probabilities ``(batch, classes)`` of a fine-tuned checkpoint."""
        if not self.cfg.finetuned_model:
            raise ValueError("this BEATs checkpoint has no predictor head (finetuned_model = False)")
        x, mask = self.extract_features(waveforms, padding_mask)
        logits = self.predictor(F.dropout(x, p=self.cfg.predictor_dropout, training=self.training))
        if mask is not None and mask.any():
            logits = logits.masked_fill(mask.unsqueeze(-1), 0.0).sum(1) / (~mask).sum(1, keepdim=True)
        else:
            logits = logits.mean(1)
        return torch.sigmoid(logits)

    def add_lora(self, rank: int, alpha: float | None = None, seed: int = 0) -> list[str]:
        """Add LoRA adapters (seeded init) to every attention projection; returns their parameter names."""
        generator = torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, LoRALinear):
                module.add_adapter(rank, alpha if alpha is not None else float(rank), generator)
        return [n for n, _ in self.named_parameters() if ".lora_" in n]


def patch_matmul(fbank: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(fbank.unsqueeze(1))`` as ``(batch, patches, embed)`` in time-major patch order, computed
    as one matmul: the conv's stride is its kernel, so each output is one patch dotted with the kernel
    (oneDNN's convolution is several times slower on this shape). ``fbank``: ``(batch, frames, bins)``."""
    side = conv.kernel_size[0]
    batch, frames, bins = fbank.shape
    t, f = frames // side, bins // side
    patches = fbank[:, : t * side, : f * side].reshape(batch, t, side, f, side).transpose(2, 3)
    return F.linear(patches.reshape(batch, t * f, side * side), conv.weight.reshape(conv.out_channels, -1), conv.bias)


def pool(features: torch.Tensor, freq_patches: int, pooling: Pooling = "mean", mask: torch.Tensor | None = None):
    """Clip embedding from patch features ``(batch, patches, dim)``.

    ``mean``: mean over all (non-padding) patches -> ``(batch, dim)``.
    ``mean_freq``: mean over time only, keeping the frequency position -> ``(batch, freq_patches * dim)``.
    """
    if mask is not None:
        keep = (~mask).unsqueeze(-1).to(features.dtype)
    else:
        keep = torch.ones_like(features[..., :1])
    if pooling == "mean":
        return (features * keep).sum(1) / keep.sum(1).clamp_min(1.0)
    if pooling == "mean_freq":
        b, p, d = features.shape
        f = features.view(b, p // freq_patches, freq_patches, d)
        k = keep.view(b, p // freq_patches, freq_patches, 1)
        return ((f * k).sum(1) / k.sum(1).clamp_min(1.0)).reshape(b, freq_patches * d)
    raise ValueError(f"unknown pooling '{pooling}'")
