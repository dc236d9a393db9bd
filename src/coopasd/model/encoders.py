"""Which learned encoder a run uses (``[model] backbone``): BEATs, or the aiSFX CNN with its top blocks tuned."""

from __future__ import annotations

from coopasd.config.settings import ModelConfig
from coopasd.model.aisfx import DEFAULT_WEIGHTS as AISFX_WEIGHTS
from coopasd.model.aisfx_encoder import AisfxEncoder, aisfx_encoder
from coopasd.model.beats import BEATs
from coopasd.model.beats_config import BEATsConfig
from coopasd.model.checkpoint import check_encoder_settings
from coopasd.model.checkpoint import initial_encoder as initial_beats

Encoder = BEATs | AisfxEncoder


def initial_encoder(cfg: ModelConfig, seed: int = 0, quiet: bool = False) -> tuple[Encoder, str]:
    """The starting encoder of ``[model]`` and a sentence saying where it came from (log, report;
    ``quiet``: no warning about a random start, for a settings check before the run)."""
    if cfg.backbone == "aisfx":
        origin = f"shipped aiSFX CNN ({AISFX_WEIGHTS.name}), top {cfg.aisfx_train_blocks} block(s) trainable"
        return aisfx_encoder(cfg.aisfx_train_blocks), origin
    return initial_beats(cfg, seed, quiet)


def encoder_for_file(cfg: ModelConfig, encoder_cfg: dict, meta: dict) -> Encoder:
    """An empty encoder of the shape a factory model file describes (its state dict is loaded next).

    aiSFX: the frozen part comes from the shipped weights, checked against the sha256 the file recorded.
    """
    if cfg.backbone == "aisfx":
        return aisfx_encoder(cfg.aisfx_train_blocks, expected_sha256=str(meta["aisfx_weights_sha256"]))
    encoder = BEATs(BEATsConfig.from_dict(encoder_cfg))
    check_encoder_settings(encoder, cfg, "the model file's encoder")
    if cfg.lora_rank:
        encoder.add_lora(cfg.lora_rank)
    return encoder
