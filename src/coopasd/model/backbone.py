"""Transformer layers of the BEATs encoder (post-LN with DeepNorm scaling, gated relative
position bias), written so that the official checkpoints' parameter names load unchanged.

Every layer works on ``(batch, patches, dim)``; the relative position bias ``(heads, patches,
patches)`` is computed once per forward and shared by all layers, as in the reference.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from coopasd.model.beats_config import BEATsConfig

ATTENTION_ALPHA = 32.0  # BEATs scales logits down by alpha, subtracts the row max, scales back up
ComputePath = Literal["fast", "sdpa", "plain"]  # how the layers compute (same results): see BEATs.set_path
PATHS: tuple[str, ...] = ("fast", "sdpa", "plain")
FFT_MIN_BATCH = 4  # fast path, CPU: the positional convolution goes through the FFT from this many clips
# (its weight-side cost is fixed per call; measured crossover on `base`, 10 s clips: 4-5 clips)


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
        self._kept_response: tuple | None = None  # inference FFT path: (n, weight_v, weight_g, spectrum)

    def forward(self, x: torch.Tensor, fft: bool = False) -> torch.Tensor:
        """``(batch, channels, length)`` -> ``(batch, channels, length + 2 padding - kernel + 1)``."""
        if fft and onednn_usable(x):  # inference: the weight's spectrum is kept between calls
            response = self._inference_response(x.shape[-1])
            return convolve_spectrum(x, response, self.weight_v.shape[-1], self.bias, self.padding)
        weight = torch._weight_norm(self.weight_v, self.weight_g, 2)
        if fft:
            return fft_conv1d(x, weight, self.bias, self.groups, self.padding)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)

    def _inference_response(self, length: int) -> torch.Tensor:
        """The weight's spectrum for inputs of ``length``, recomputed only when the weights changed. They
        are compared by value with a copy kept beside the spectrum (a few ms), so no way of editing the
        parameters (an optimizer step, ``load_state_dict``, ``p.data = ...``) can leave it stale."""
        n = fft_size(length, self.weight_v.shape[-1])
        kept = self._kept_response
        if (
            kept is not None
            and kept[0] == n
            and torch.equal(kept[1], self.weight_v)
            and torch.equal(kept[2], self.weight_g)
        ):
            return kept[3]
        weight = torch._weight_norm(self.weight_v, self.weight_g, 2)
        response = fft_response(weight, self.groups, n)
        self._kept_response = (n, self.weight_v.detach().clone(), self.weight_g.detach().clone(), response)
        return response


def fft_size(length: int, kernel: int) -> int:
    """FFT length of a full linear convolution of ``length`` samples with ``kernel`` taps (a multiple of 32)."""
    return -(-(length + kernel - 1) // 32) * 32


def fft_response(weight: torch.Tensor, groups: int, n: int) -> torch.Tensor:
    """Spectrum ``(groups, n // 2 + 1, in per group, out per group)`` of a grouped conv weight
    ``(out, in per group, kernel)``, flipped so that the product is a correlation like ``F.conv1d``."""
    out_channels, per_group, kernel = weight.shape
    taps = weight.flip(-1).reshape(groups, out_channels // groups, per_group, kernel)
    return torch.fft.rfft(taps, n=n).permute(0, 3, 2, 1).contiguous()


def fft_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, padding: int) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, padding=padding, groups=groups)`` through the FFT: for BEATs' long
    kernel (128 taps) a few complex matmuls per frequency replace about 5 % of the encoder's FLOPs."""
    kernel = weight.shape[-1]
    response = fft_response(weight, groups, fft_size(x.shape[-1], kernel))
    return convolve_spectrum(x, response, kernel, bias, padding)


def convolve_spectrum(
    x: torch.Tensor, response: torch.Tensor, kernel: int, bias: torch.Tensor, padding: int
) -> torch.Tensor:
    """:func:`fft_conv1d` of ``x`` ``(batch, channels, length)`` with a weight given by its
    :func:`fft_response` (``kernel`` taps)."""
    batch, _, length = x.shape
    groups, bins, per_group, out_per_group = response.shape
    n = 2 * (bins - 1)
    spectrum = torch.fft.rfft(x.reshape(batch, groups, per_group, length), n=n).permute(1, 3, 0, 2)  # (g, f, b, i)
    full = torch.fft.irfft(torch.matmul(spectrum, response).permute(2, 0, 3, 1), n=n)  # (b, g, o, n)
    start, size = kernel - 1 - padding, length + 2 * padding - kernel + 1
    return full[..., start : start + size].reshape(batch, groups * out_per_group, size) + bias[:, None]


class PositionalConv(nn.Sequential):
    """Convolutional positional embedding: conv, drop the extra frame of an even kernel, GELU.

    ``path`` (:meth:`BEATs.set_path`): ``fast`` convolves through the FFT on CPU where no patch is
    padding (the FFT's round-off is absolute: in zeroed padding it is not small against the values):
    in float32 inference always (the weight's spectrum is kept between calls), with gradients for
    batches of at least :data:`FFT_MIN_BATCH` clips (the spectrum is recomputed each call)."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__(WeightNormConv1d(channels, kernel_size, groups))
        self.trim = 1 if kernel_size % 2 == 0 else 0
        self.path: ComputePath = "fast"

    def forward(self, x: torch.Tensor, padded: bool = False) -> torch.Tensor:  # (batch, dim, patches)
        fft = self.path == "fast" and x.device.type == "cpu" and not padded
        fft = fft and (onednn_usable(x) or x.shape[0] >= FFT_MIN_BATCH)
        x = self[0](x, fft=fft)
        if self.trim:
            x = x[:, :, : -self.trim]
        return F.gelu(x)


def offset_buckets(offsets: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5-style bidirectional bucket of each ``key - query`` offset (any shape, long)."""
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


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Buckets of all ``key - query`` offsets, ``(length, length)``."""
    return offset_buckets(torch.arange(length)[None, :] - torch.arange(length)[:, None], num_buckets, max_distance)


def relative_position_bias(table: torch.Tensor, length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bias ``(heads, length, length)`` from a ``(num_buckets, heads)`` table: buckets are computed for
    the ``2 length - 1`` distinct offsets only, then spread over the (Toeplitz) matrix in one gather."""
    offsets = torch.arange(-(length - 1), length, device=table.device)
    per_offset = table[offset_buckets(offsets, num_buckets, max_distance)].T  # (heads, 2 length - 1)
    index = torch.arange(length, device=table.device)
    return per_offset[:, index[None, :] - index[:, None] + (length - 1)]


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


def onednn_usable(x: torch.Tensor) -> bool:
    """Whether oneDNN's fused CPU linear kernels (bias and GELU fused into the matmul) can run on ``x``:
    float32 CPU inference only (they have no autograd formula and no autocast rule)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
    )


ONEDNN_ACTIVATIONS = {None: ("none", ""), "gelu": ("gelu", "none"), "sigmoid": ("sigmoid", "")}  # (post-op, algorithm)


def dense(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    onednn: bool,
    activation: Literal["gelu", "sigmoid"] | None = None,
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then exact GELU or sigmoid if asked; through oneDNN's kernel with
    the activation fused where ``onednn`` (see :func:`onednn_usable`)."""
    if onednn:
        post, algorithm = ONEDNN_ACTIVATIONS[activation]
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, post, [], algorithm)
    out = F.linear(x, weight, bias)
    if activation == "gelu":
        return F.gelu(out)
    return torch.sigmoid(out) if activation == "sigmoid" else out


def linear(layer: nn.Linear, x: torch.Tensor, onednn: bool, gelu: bool = False) -> torch.Tensor:
    """``layer(x)`` (then exact GELU if asked), through oneDNN's fused kernel where ``onednn``."""
    if isinstance(layer, LoRALinear) and layer.lora_a is not None:
        out = layer(x)
        return F.gelu(out) if gelu else out
    return dense(x, layer.weight, layer.bias, onednn, "gelu" if gelu else None)


def fused_projection(x: torch.Tensor, layers: tuple[nn.Linear, ...], onednn: bool = False) -> tuple[torch.Tensor, ...]:
    """``tuple(layer(x) for layer in layers)`` as one matmul over the concatenated weights (the
    parameters keep their own names, so official checkpoints load unchanged); through oneDNN's
    kernel where ``onednn``."""
    weight = torch.cat([layer.weight for layer in layers])
    bias = torch.cat([layer.bias for layer in layers])
    return dense(x, weight, bias, onednn).split([layer.out_features for layer in layers], dim=-1)


class MultiheadAttention(nn.Module):
    """Self-attention with BEATs' gated relative position bias, computed along one of three paths
    (same parameters, same results within float32 rounding; :meth:`BEATs.set_path` picks):

    - ``sdpa``: ``scaled_dot_product_attention`` with the gated bias (and the padding) as one additive
      float mask; q/k/v in one fused matmul on CUDA. Portable: trains, traces and exports to ONNX.
    - ``fast`` (default): ``sdpa`` plus, in float32 CPU inference, oneDNN's fused linear kernels.
    - ``plain``: the reference's hand-written softmax with its numerically stabilized logits (the
      oracle the other two are tested against).
    """

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
        self.path: ComputePath = "fast"  # see the class docstring; set with BEATs.set_path
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
        """Relative position bias ``(heads, length, length)`` (computed once per forward, shared by all layers)."""
        return relative_position_bias(self.relative_attention_bias.weight, length, self.num_buckets, self.max_distance)

    def _project(self, x: torch.Tensor, onednn: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v ``(batch, patches, dim)``: one fused matmul off the plain path on CUDA and through
        oneDNN on CPU (with MKL's CPU matmul, concatenating the weights per call costs more than the
        single matmul saves; with oneDNN's it saves about 9 %: measured on ``base``)."""
        projections = (self.q_proj, self.k_proj, self.v_proj)
        fuse = self.path != "plain" and (x.is_cuda or onednn)
        if fuse and not any(p.lora_a is not None for p in projections):
            return fused_projection(x, projections, onednn)
        q, k, v = (linear(p, x, onednn) for p in projections)
        return q, k, v

    def _gate(self, query: torch.Tensor, onednn: bool) -> torch.Tensor:
        """Per-query gate of the relative bias, ``(batch, heads, patches, 1)``, from the unscaled
        queries ``(batch, patches, heads, head_dim)``."""
        b, length, h, _ = query.shape
        if self.path != "plain":  # the 8 outputs are summed in two groups of 4: sum the weights instead
            weight = self.grep_linear.weight.view(2, 4, -1).sum(1)
            bias = self.grep_linear.bias.view(2, 4).sum(1)
            gates = dense(query, weight, bias, onednn, "sigmoid")
        else:
            gates = torch.sigmoid(self.grep_linear(query).view(b, length, h, 2, 4).sum(-1))
        gate_a, gate_b = gates.transpose(1, 2).chunk(2, dim=-1)
        return gate_a * (gate_b * self.grep_a - 1.0) + 2.0

    def forward(
        self, x: torch.Tensor, key_padding_mask: torch.Tensor | None, position_bias: torch.Tensor | None
    ) -> torch.Tensor:
        """``x``: ``(batch, patches, dim)``; ``key_padding_mask``: ``(batch, patches)``, True = padding;
        ``position_bias``: ``(heads, patches, patches)`` or None. Returns ``(batch, patches, dim)``."""
        batch, length, dim = x.shape
        heads, hd = self.num_heads, self.head_dim
        onednn = self.path == "fast" and onednn_usable(x)
        q, k, v = (t.view(batch, length, heads, hd) for t in self._project(x, onednn))
        if onednn and position_bias is not None:
            gate = self._gate(q, onednn) if self.gru_rel_pos else None
            out = self._clipwise_attention(q, k, v, position_bias, gate, key_padding_mask)
            return linear(self.out_proj, out.view(batch, length, dim), onednn)
        bias = None
        if position_bias is not None:
            bias = self._gate(q, onednn) * position_bias if self.gru_rel_pos else position_bias.unsqueeze(0)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.path == "plain":
            out = self._softmax_attention(q, k, v, bias, key_padding_mask)
        else:
            out = self._sdpa(q, k, v, bias, key_padding_mask)
        return linear(self.out_proj, out.transpose(1, 2).reshape(batch, length, dim), onednn)

    def _sdpa(self, q, k, v, bias: torch.Tensor | None, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        """Softmax(q k^T * scaling + bias) v with PyTorch's fused kernels; BEATs' max subtraction is a
        no-op for a softmax (shift invariance) and the kernels stabilize on their own."""
        mask = bias
        if key_padding_mask is not None:
            pad = key_padding_mask[:, None, None, :].bool()
            if mask is None:
                mask = torch.zeros(pad.shape, dtype=q.dtype, device=q.device).masked_fill_(pad, float("-inf"))
            elif self.gru_rel_pos:  # the gated bias is this layer's own tensor: fill it in place
                mask = mask.masked_fill_(pad, float("-inf"))
            else:
                mask = mask.masked_fill(pad, float("-inf"))
        if mask is not None:
            mask = mask.to(q.dtype)
        dropout = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scaling)

    def _clipwise_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        position_bias: torch.Tensor,
        gate: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """CPU inference: softmax(q k^T * scaling + gate * bias) v one clip at a time, in one
        ``(heads, patches, patches)`` buffer reused for every clip: the gated bias is written into it,
        the matmul adds the logits, the softmax runs in place. Fewer passes over memory than building the
        batch's mask for the fused kernel. ``q, k, v``: ``(batch, patches, heads, head_dim)``; ``gate``:
        ``(batch, heads, patches, 1)`` or None. Returns ``(batch, patches, heads, head_dim)``."""
        batch, length, heads, hd = q.shape
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        logits = torch.empty(heads, length, length, dtype=q.dtype)
        out = torch.empty(batch, length, heads, hd, dtype=q.dtype)
        for i in range(batch):
            if gate is None:
                logits.copy_(position_bias)
            else:
                torch.mul(gate[i], position_bias, out=logits)
            if key_padding_mask is not None:
                logits.masked_fill_(key_padding_mask[i].bool(), float("-inf"))
            logits.baddbmm_(q[i], k[i].transpose(-1, -2), alpha=self.scaling)
            probs = torch.ops.aten._softmax.out(logits, -1, False, out=logits)
            out[i] = torch.bmm(probs, v[i]).transpose(0, 1)
        return out

    def _softmax_attention(self, q, k, v, bias: torch.Tensor | None, key_padding_mask: torch.Tensor | None):
        """The reference's form: logits scaled down by alpha, row max subtracted, scaled back up."""
        logits = torch.matmul(q * self.scaling / ATTENTION_ALPHA, k.transpose(-1, -2))
        logits = (logits - logits.max(dim=-1, keepdim=True).values) * ATTENTION_ALPHA
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask[:, None, None, :].bool(), float("-inf"))
        if bias is not None:
            logits = logits + bias
        attn = F.dropout(F.softmax(logits, dim=-1), p=self.dropout, training=self.training)
        return torch.matmul(attn, v)


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
    ) -> torch.Tensor:
        """``x``: ``(batch, patches, dim)`` -> same shape."""
        drop = lambda t, p: F.dropout(t, p=p, training=self.training)  # noqa: E731
        onednn = self.self_attn.path == "fast" and onednn_usable(x)
        if self.layer_norm_first:
            x = x + drop(self.self_attn(self.self_attn_layer_norm(x), padding_mask, position_bias), self.dropout)
            h = drop(linear(self.fc1, self.final_layer_norm(x), onednn, gelu=True), self.activation_dropout)
            return x + drop(linear(self.fc2, h, onednn), self.dropout)
        h = self.self_attn(x, padding_mask, position_bias)
        x = self.self_attn_layer_norm(torch.add(drop(h, self.dropout), x, alpha=self.alpha))
        h = drop(linear(self.fc1, x, onednn, gelu=True), self.activation_dropout)
        return self.final_layer_norm(torch.add(drop(linear(self.fc2, h, onednn), self.dropout), x, alpha=self.alpha))


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
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        return_layers: bool = False,
        num_layers: int | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x``: ``(batch, patches, dim)`` -> same shape, plus every layer's output if asked.

        ``num_layers``: run only the first layers (the output is then that layer's, without the
        final layer norm of pre-LN models): what a pooled intermediate layer needs.
        """
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2), padded=padding_mask is not None).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = F.dropout(x, p=self.dropout, training=self.training)
        first = self.layers[0].self_attn
        position_bias = first.compute_bias(x.shape[1]) if hasattr(first, "relative_attention_bias") else None
        hidden: list[torch.Tensor] = []
        layers = self.layers if num_layers is None else self.layers[:num_layers]
        for layer in layers:
            if not self.training or not self.layerdrop or torch.rand(()) >= self.layerdrop:
                x = layer(x, padding_mask, position_bias)
            if return_layers:
                hidden.append(x)
        if self.layer_norm_first and (num_layers is None or num_layers >= len(self.layers)):
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
