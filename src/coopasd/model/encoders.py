"""Which learned encoder a run uses (``[model] backbone``): BEATs, or the aiSFX CNN with its top blocks tuned."""

from __future__ import annotations

from coopasd.config.settings import DetectConfig, ModelConfig, detector_members
from coopasd.model.aisfx import DEFAULT_WEIGHTS as AISFX_WEIGHTS
from coopasd.model.aisfx_encoder import AisfxEncoder, aisfx_encoder
from coopasd.model.beats import BEATs
from coopasd.model.beats_config import BEATsConfig
from coopasd.model.checkpoint import check_encoder_settings
from coopasd.model.checkpoint import initial_encoder as initial_beats
from coopasd.model.frame_autoencoder import attach_autoencoder

Encoder = BEATs | AisfxEncoder


def initial_encoder(
    cfg: ModelConfig, seed: int = 0, quiet: bool = False, autoencoder: bool = False
) -> tuple[Encoder, str]:
    """The starting encoder of ``[model]`` and a sentence saying where it came from (log, report;
    ``quiet``: no warning about a random start, for a settings check before the run); ``autoencoder``:
    carrying a new frame autoencoder (the ``ae`` detector member, see :func:`wants_autoencoder`)."""
    if cfg.backbone == "aisfx":
        origin = f"shipped aiSFX CNN ({AISFX_WEIGHTS.name}), top {cfg.aisfx_train_blocks} block(s) trainable"
        encoder: Encoder = aisfx_encoder(cfg.aisfx_train_blocks)
    else:
        encoder, origin = initial_beats(cfg, seed, quiet)
    if autoencoder:
        attach_autoencoder(encoder, seed)
        origin += ", with a new frame autoencoder"
    return encoder, origin


def wants_autoencoder(detect: DetectConfig) -> bool:
    """Whether the detector has the ``ae`` member, whose frame autoencoder the encoder carries."""
    return "ae" in detector_members(detect.features)


def encoder_for_file(cfg: ModelConfig, encoder_cfg: dict, meta: dict, autoencoder: bool = False) -> Encoder:
    """An empty encoder of the shape a factory model file describes (its state dict is loaded next).

    aiSFX: the frozen part comes from the shipped weights, checked against the sha256 the file recorded.
    """
    if cfg.backbone == "aisfx":
        encoder: Encoder = aisfx_encoder(cfg.aisfx_train_blocks, expected_sha256=str(meta["aisfx_weights_sha256"]))
    else:
        encoder = BEATs(BEATsConfig.from_dict(encoder_cfg))
        check_encoder_settings(encoder, cfg, "the model file's encoder")
        if cfg.lora_rank:
            encoder.add_lora(cfg.lora_rank)
    if autoencoder:
        attach_autoencoder(encoder)
    return encoder
