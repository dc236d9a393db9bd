"""BEATs settings: the official ``cfg`` dict's fields and defaults, and the named presets (tiny .. base)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BEATsConfig:
    """BEATs settings; field names and defaults are those of the official ``cfg`` dicts."""

    input_patch_size: int = 16  # patch side on the (frames, 128 mel) fbank
    embed_dim: int = 512  # patch embedding width
    conv_bias: bool = False  # bias in the patch embedding conv
    encoder_layers: int = 12  # transformer layers
    encoder_embed_dim: int = 768  # transformer width
    encoder_ffn_embed_dim: int = 3072  # feed-forward width
    encoder_attention_heads: int = 12  # attention heads
    activation_fn: str = "gelu"  # feed-forward activation (BEATs: gelu)
    layer_wise_gradient_decay_ratio: float = 1.0  # kept for cfg compatibility (training-time only)
    layer_norm_first: bool = False  # pre-LN instead of post-LN
    deep_norm: bool = False  # DeepNorm residual scaling (iter3: True)
    dropout: float = 0.1  # residual dropout
    attention_dropout: float = 0.1  # attention-probability dropout
    activation_dropout: float = 0.0  # dropout after the FFN activation
    encoder_layerdrop: float = 0.0  # probability of skipping a layer in training
    dropout_input: float = 0.0  # dropout on the projected patches
    conv_pos: int = 128  # kernel of the convolutional positional embedding
    conv_pos_groups: int = 16  # groups of that convolution
    relative_position_embedding: bool = False  # relative position bias (iter3: True)
    num_buckets: int = 320  # relative position buckets
    max_distance: int = 1280  # largest distinguished offset
    gru_rel_pos: bool = False  # query-gated relative position bias (iter3: True)
    finetuned_model: bool = False  # has an AudioSet predictor head
    predictor_dropout: float = 0.1  # dropout before the predictor
    predictor_class: int = 527  # predictor classes

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> BEATsConfig:
        """From an official or our own ``cfg`` dict; keys we do not know are logged and ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(cfg) - known)
        if extra:
            log.debug("ignoring BEATs cfg keys %s", extra)
        return cls(**{k: v for k, v in cfg.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, BEATsConfig] = {
    # the official BEATs_iter3 shape (about 90 M parameters)
    "base": BEATsConfig(
        deep_norm=True,
        relative_position_embedding=True,
        gru_rel_pos=True,
        max_distance=800,
        dropout=0.0,
        attention_dropout=0.0,
    ),
    # small enough to train on 2 CPU cores in minutes (about 2 M parameters)
    "tiny": BEATsConfig(
        embed_dim=128,
        encoder_layers=4,
        encoder_embed_dim=192,
        encoder_ffn_embed_dim=768,
        encoder_attention_heads=4,
        deep_norm=True,
        relative_position_embedding=True,
        gru_rel_pos=True,
        conv_pos=32,
        conv_pos_groups=16,
        num_buckets=64,
        max_distance=200,
        dropout=0.1,
        attention_dropout=0.0,
    ),
}


def preset(name: str) -> BEATsConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown BEATs preset '{name}'; available: {', '.join(PRESETS)}")
    return PRESETS[name]
