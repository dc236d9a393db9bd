"""Transformer layers of the BEATs encoder (post-LN with DeepNorm scaling, gated relative
position bias), written so that the official checkpoints' parameter names load unchanged.

Shapes follow the reference: the encoder works on ``(batch, patches, dim)`` at its surface and
``(patches, batch, dim)`` inside the layers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from coopasd.model.beats import BEATsConfig

ATTENTION_ALPHA = 32.0  # BEATs scales logits down by alpha, subtracts the row max, scales back up


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight normalization over the kernel axis (``weight_g``, ``weight_v``
    as the reference's ``nn.utils.weight_norm(conv, dim=2)`` names them)."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.padding = kernel_size // 2
        std = math.sqrt(4.0 / (kernel_size * channels))
        v = torch.randn(channels, channels // groups, kernel_size) * std
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = torch._weight_norm(self.weight_v, self.weight_g, 2)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class PositionalConv(nn.Sequential):
    """Convolutional positional embedding: conv, drop the extra frame of an even kernel, GELU."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__(WeightNormConv1d(channels, kernel_size, groups))
        self.trim = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, dim, patches)
        x = self[0](x)
        if self.trim:
            x = x[:, :, : -self.trim]
        return F.gelu(x)


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5-style bidirectional buckets of ``key - query`` offsets, ``(length, length)``."""
    offsets = torch.arange(length)[None, :] - torch.arange(length)[:, None]
    half = num_buckets // 2
    buckets = (offsets > 0).long() * half
    distance = offsets.abs()
    max_exact = half // 2
    large = (
        max_exact
        + (torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)).long()
    )
    large = torch.clamp(large, max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class LoRALinear(nn.Linear):
    """A Linear layer with an optional low-rank update ``B @ A`` (scaled by alpha / rank).

    With ``rank == 0`` it is a plain Linear. The base weight can be frozen while the adapters train.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias)
        self.lora_a: nn.Parameter | None = None
        self.lora_b: nn.Parameter | None = None
        self.lora_scale = 0.0

    def add_adapter(self, rank: int, alpha: float, generator: torch.Generator | None = None) -> None:
        a = torch.randn(rank, self.in_features, generator=generator) / math.sqrt(self.in_features)
        self.lora_a = nn.Parameter(a)
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank))
        self.lora_scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.lora_a is not None and self.lora_b is not None:
            out = out + (x @ self.lora_a.T @ self.lora_b.T) * self.lora_scale
        return out


class MultiheadAttention(nn.Module):
    """Self-attention with BEATs' numerically stabilized logits and gated relative position bias."""

    def __init__(self, cfg: BEATsConfig, has_relative_bias: bool) -> None:
        super().__init__()
        dim, heads = cfg.encoder_embed_dim, cfg.encoder_attention_heads
        if dim % heads:
            raise ValueError(f"encoder_embed_dim {dim} is not divisible by {heads} heads")
        self.num_heads = heads
        self.head_dim = dim // heads
        self.scaling = self.head_dim**-0.5
        self.dropout = cfg.attention_dropout
        self.num_buckets = cfg.num_buckets
        self.max_distance = cfg.max_distance
        if has_relative_bias:
            self.relative_attention_bias = nn.Embedding(cfg.num_buckets, heads)
        self.k_proj = LoRALinear(dim, dim)
        self.v_proj = LoRALinear(dim, dim)
        self.q_proj = LoRALinear(dim, dim)
        self.out_proj = LoRALinear(dim, dim)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def compute_bias(self, length: int) -> torch.Tensor:
        """Relative position bias ``(heads, length, length)``."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets.to(self.relative_attention_bias.weight.device)).permute(2, 0, 1)

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None, position_bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x``: ``(patches, batch, dim)``; ``key_padding_mask``: ``(batch, patches)``, True = padding.

        Returns the output and the ``(batch * heads, patches, patches)`` position bias for the next layer.
        """
        length, batch, dim = x.shape
        heads, hd = self.num_heads, self.head_dim
        if position_bias is None and hasattr(self, "relative_attention_bias"):
            position_bias = self.compute_bias(length).unsqueeze(0).expand(batch, -1, -1, -1)
            position_bias = position_bias.reshape(batch * heads, length, length)
        q = self.q_proj(x) * self.scaling / ATTENTION_ALPHA
        k = self.k_proj(x)
        v = self.v_proj(x)
        q = q.reshape(length, batch * heads, hd).transpose(0, 1)
        k = k.reshape(length, batch * heads, hd).transpose(0, 1)
        v = v.reshape(length, batch * heads, hd).transpose(0, 1)
        logits = torch.bmm(q, k.transpose(1, 2))
        logits = (logits - logits.max(dim=-1, keepdim=True).values) * ATTENTION_ALPHA
        if key_padding_mask is not None:
            logits = logits.view(batch, heads, length, length)
            logits = logits.masked_fill(key_padding_mask[:, None, None, :].bool(), float("-inf"))
            logits = logits.view(batch * heads, length, length)
        if position_bias is not None:
            bias = position_bias
            if self.gru_rel_pos:
                query = q.view(batch, heads, length, hd) * ATTENTION_ALPHA / self.scaling
                gates = torch.sigmoid(self.grep_linear(query).view(batch, heads, length, 2, 4).sum(-1))
                gate_a, gate_b = gates.chunk(2, dim=-1)
                gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0
                bias = gate.reshape(batch * heads, length, 1) * position_bias
            logits = logits + bias.view(logits.shape)
        attn = F.dropout(F.softmax(logits, dim=-1), p=self.dropout, training=self.training)
        out = torch.bmm(attn, v).transpose(0, 1).reshape(length, batch, dim)
        return self.out_proj(out), position_bias


class EncoderLayer(nn.Module):
    """Post-LN transformer layer; residuals scaled by DeepNorm's alpha = (2 N)^(1/4) when enabled."""

    def __init__(self, cfg: BEATsConfig, has_relative_bias: bool) -> None:
        super().__init__()
        if cfg.activation_fn != "gelu":
            raise ValueError(f"activation_fn '{cfg.activation_fn}' is not supported (BEATs uses gelu)")
        dim = cfg.encoder_embed_dim
        self.self_attn = MultiheadAttention(cfg, has_relative_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout = cfg.dropout
        self.activation_dropout = cfg.activation_dropout
        self.layer_norm_first = cfg.layer_norm_first
        self.alpha = math.pow(2 * cfg.encoder_layers, 0.25) if cfg.deep_norm else 1.0

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None, position_bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        drop = lambda t, p: F.dropout(t, p=p, training=self.training)  # noqa: E731
        if self.layer_norm_first:
            h, position_bias = self.self_attn(self.self_attn_layer_norm(x), padding_mask, position_bias)
            x = x + drop(h, self.dropout)
            h = drop(F.gelu(self.fc1(self.final_layer_norm(x))), self.activation_dropout)
            return x + drop(self.fc2(h), self.dropout), position_bias
        h, position_bias = self.self_attn(x, padding_mask, position_bias)
        x = self.self_attn_layer_norm(x * self.alpha + drop(h, self.dropout))
        h = drop(F.gelu(self.fc1(x)), self.activation_dropout)
        x = self.final_layer_norm(x * self.alpha + drop(self.fc2(h), self.dropout))
        return x, position_bias


class TransformerEncoder(nn.Module):
    """Positional convolution, layer norm, and the stack of encoder layers."""

    def __init__(self, cfg: BEATsConfig) -> None:
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.pos_conv = PositionalConv(dim, cfg.conv_pos, cfg.conv_pos_groups)
        self.layers = nn.ModuleList(
            [EncoderLayer(cfg, cfg.relative_position_embedding) for _ in range(cfg.encoder_layers)]
        )
        if cfg.relative_position_embedding:  # one bias table, shared by every layer
            for layer in self.layers[1:]:
                layer.self_attn.relative_attention_bias = self.layers[0].self_attn.relative_attention_bias
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = cfg.layer_norm_first
        self.dropout = cfg.dropout
        self.layerdrop = cfg.encoder_layerdrop
        _init_weights(self, cfg)

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None, return_layers: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x``: ``(batch, patches, dim)`` -> same shape, plus every layer's output if asked."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, p=self.dropout, training=self.training).transpose(0, 1)
        hidden: list[torch.Tensor] = []
        position_bias = None
        for layer in self.layers:
            if not self.training or torch.rand(()) >= self.layerdrop:
                x, position_bias = layer(x, padding_mask, position_bias)
            if return_layers:
                hidden.append(x.transpose(0, 1))
        x = x.transpose(0, 1)
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return x, hidden


def _init_weights(encoder: TransformerEncoder, cfg: BEATsConfig) -> None:
    """BERT-style init (normal 0.02), then DeepNorm's scaled Xavier init of the layer weights."""
    for module in encoder.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
    if cfg.deep_norm:
        beta = math.pow(8 * cfg.encoder_layers, -0.25)
        for layer in encoder.layers:
            attn = layer.self_attn
            for proj, gain in ((attn.k_proj, 1.0), (attn.q_proj, 1.0), (attn.v_proj, beta), (attn.out_proj, beta)):
                nn.init.xavier_normal_(proj.weight, gain=gain)
            nn.init.xavier_normal_(layer.fc1.weight, gain=beta)
            nn.init.xavier_normal_(layer.fc2.weight, gain=beta)
