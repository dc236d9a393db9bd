"""Local training of one participant's encoder on the auxiliary task (no Flower here).

Task: classify every normal training clip into its (machine type, section, attributes) class
with an ArcFace margin head; optionally also into "pseudo-anomaly" classes made by perturbing
normal clips (see :mod:`coopasd.data.augment`). Target-domain clips are few, so each epoch draws
them with replacement until they make ``target_fraction`` of the samples (oversampling).
Centralized, local-only and federated modes all call :func:`train_local`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from coopasd.config.settings import SAMPLE_RATE, ModelConfig, TrainConfig
from coopasd.data.augment import PSEUDO_ANOMALIES, pseudo_anomaly, spec_augment
from coopasd.model.aisfx_encoder import AisfxEncoder, crop_maps, mask_maps
from coopasd.model.beats import Pooling
from coopasd.model.embed import autocast, clip_embeddings, embedding_dim, pick_device, precision_scope
from coopasd.model.encoders import Encoder
from coopasd.model.frame_autoencoder import is_autoencoder_key
from coopasd.model.heads import ArcFace

log = logging.getLogger(__name__)


@dataclass
class EpochStats:
    """One training epoch: mean loss, training accuracy, last learning rate, wall time."""

    epoch: int
    loss: float
    accuracy: float
    lr: float
    seconds: float


def make_head(encoder: Encoder, n_classes: int, cfg: TrainConfig, pooling: Pooling) -> ArcFace:
    """An ArcFace head over the attribute classes plus, if enabled, one class per pseudo-anomaly kind."""
    extra = len(PSEUDO_ANOMALIES) if cfg.pseudo_anomalies else 0
    return ArcFace(embedding_dim(encoder, pooling), n_classes + extra, cfg.margin, cfg.scale, seed=cfg.seed)


def _target_draws(n_source: int, n_target: int, fraction: float) -> int:
    """Target clips per epoch so that they make ``fraction`` of it (never fewer than there are)."""
    if n_target == 0 or n_source == 0 or fraction <= 0:
        return n_target
    return max(n_target, int(round(fraction * n_source / (1 - fraction))))


def _epoch_indices(is_target: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """One epoch's clip order: every clip once, target clips topped up with repeats to ``fraction``."""
    src, tgt = np.flatnonzero(~is_target), np.flatnonzero(is_target)
    extra = _target_draws(len(src), len(tgt), fraction) - len(tgt)
    repeats = rng.choice(tgt, extra, replace=True) if extra > 0 else np.zeros(0, dtype=np.int64)
    return rng.permutation(np.concatenate([src, tgt, repeats]))


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainingSet:
    """A participant's normal training clips, labelled for the auxiliary task.

    ``waves``: ``(n, samples)`` float32 waveforms at :data:`SAMPLE_RATE`; ``labels``: ``(n,)``
    attribute-class ids in ``[0, n_classes)``; ``is_target``: ``(n,)`` bool, target-domain clips.
    """

    waves: np.ndarray
    labels: np.ndarray
    is_target: np.ndarray


def train_local(
    encoder: Encoder,
    head: ArcFace,
    data: TrainingSet,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    progress: Callable[[int], None] | None = None,
    global_params: dict[str, torch.Tensor] | None = None,
) -> list[EpochStats]:
    """Train ``encoder`` and ``head`` in place on one participant's normal clips.

    The embedding the head classifies is ``model_cfg.pooling`` of layer ``model_cfg.layer``, computed
    at ``model_cfg.precision`` (bf16 autocast needs no loss scaling);
    target-domain clips are oversampled; ``global_params`` are the round's global weights, for
    the FedProx term (``cfg.proximal_mu > 0``). Returns one :class:`EpochStats` per epoch.

    The aiSFX encoder (:class:`~coopasd.model.aisfx_encoder.AisfxEncoder`) runs its frozen part once per
    clip here (and once per pseudo-anomaly copy): crops, masks and mixup then act on those cached maps,
    so an epoch is a pass of the trainable top block(s) only.
    """
    waves, labels, is_target = data.waves, data.labels, data.is_target
    pooling, layer = model_cfg.pooling, model_cfg.layer
    if len(waves) == 0:
        raise ValueError("no training clips")
    dev = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    encoder.to(dev).train()
    head.to(dev).train()
    if cfg.freeze_backbone:
        for name, p in encoder.named_parameters():
            p.requires_grad = ".lora_" in name
    own = [(n, p) for n, p in encoder.named_parameters() if not is_autoencoder_key(n)]  # the AE trains apart
    params = [p for _, p in own if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(_epoch_indices(is_target, cfg.target_fraction, rng)) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, total, max(1, int(cfg.warmup_fraction * total)))
    )
    anchors = {k: v.detach().to(dev) for k, v in global_params.items()} if global_params and cfg.proximal_mu else {}
    n_attr = head.weight.shape[0] - (len(PSEUDO_ANOMALIES) if cfg.pseudo_anomalies else 0)
    crop = int(cfg.crop_seconds * SAMPLE_RATE) if cfg.crop_seconds > 0 else waves.shape[1]
    crop = min(crop, waves.shape[1])
    augment = (lambda fb: spec_augment(fb, gen)) if cfg.spec_augment else None
    cache = _cached_maps(encoder, waves, n_attr, cfg, gen, rng, dev) if isinstance(encoder, AisfxEncoder) else None
    if cache is not None:
        map_frames = max(encoder.min_frames, round(cache[0].shape[2] * crop / waves.shape[1]))  # type: ignore[union-attr]
        augment = (lambda maps: mask_maps(maps, gen)) if cfg.spec_augment else None
    history: list[EpochStats] = []
    with precision_scope(model_cfg.precision, dev) as mode:  # bf16 autocast / TF32 where asked
        for epoch in range(cfg.epochs):
            start, losses, correct, seen = time.perf_counter(), [], 0, 0
            order = _epoch_indices(is_target, cfg.target_fraction, rng)
            for s in range(0, len(order), cfg.batch_size):
                idx = order[s : s + cfg.batch_size]
                if cache is not None:
                    batch, target = _map_batch(cache, labels, idx, map_frames, gen, rng)
                else:
                    batch, target = _make_batch(waves, labels, idx, crop, n_attr, cfg, gen, rng)
                batch, soft = batch.to(dev), F.one_hot(target, head.weight.shape[0]).float().to(dev)
                if cfg.mixup > 0:
                    lam = float(rng.beta(cfg.mixup, cfg.mixup))
                    perm = torch.randperm(len(batch), generator=gen).to(dev)
                    batch, soft = lam * batch + (1 - lam) * batch[perm], lam * soft + (1 - lam) * soft[perm]
                with autocast(mode, dev):
                    if cache is not None:
                        emb = encoder.top_embedding(augment(batch) if augment else batch)  # type: ignore[union-attr]
                    else:
                        emb = clip_embeddings(encoder, batch, pooling, layer, augment)
                    logits = head(emb, soft)
                    loss = -(soft * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
                if anchors:
                    prox = sum((p - anchors[n]).pow(2).sum() for n, p in own if n in anchors)
                    loss = loss + 0.5 * cfg.proximal_mu * prox
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                with torch.no_grad():
                    correct += int((head.cosine(emb.float()).argmax(1) == soft.argmax(1)).sum())
                seen += len(idx)
                if progress:
                    progress(1)
            stats = EpochStats(
                epoch + 1,
                float(np.mean(losses)),
                correct / seen,
                schedule.get_last_lr()[0],
                time.perf_counter() - start,
            )
            log.debug("epoch %d: loss %.3f acc %.3f", stats.epoch, stats.loss, stats.accuracy)
            history.append(stats)
    encoder.eval()
    head.eval()
    return history


def _make_batch(waves, labels, idx, crop, n_attr, cfg, gen, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops of the chosen clips; with pseudo-anomalies on, half of them perturbed."""
    clips, targets = [], []
    for i in idx:
        start = int(rng.integers(0, waves.shape[1] - crop + 1))
        wave = torch.from_numpy(np.ascontiguousarray(waves[i, start : start + crop]))
        target = int(labels[i])
        if cfg.pseudo_anomalies and rng.random() < 0.5:
            kind = int(rng.integers(len(PSEUDO_ANOMALIES)))
            wave = pseudo_anomaly(wave, PSEUDO_ANOMALIES[kind], gen).float()
            target = n_attr + kind
        clips.append(wave)
        targets.append(target)
    return torch.stack(clips), torch.tensor(targets)


MapCache = tuple[torch.Tensor, torch.Tensor | None, np.ndarray]


@torch.no_grad()
def _cached_maps(
    encoder: AisfxEncoder,
    waves: np.ndarray,
    n_attr: int,
    cfg: TrainConfig,
    gen: torch.Generator,
    rng: np.random.Generator,
    dev: torch.device,
    batch_size: int = 16,
) -> MapCache:
    """The frozen part's output for every clip ``(n, ch, time, freq)``, plus (pseudo-anomalies on) one perturbed
    copy per clip of a random kind, and the head's class id of each copy ``(n,)``."""

    def lower(x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [encoder.lower_maps(x[i : i + batch_size].to(dev)).cpu() for i in range(0, len(x), batch_size)]
        )

    clips = torch.from_numpy(np.ascontiguousarray(waves))
    normal = lower(clips)
    if not cfg.pseudo_anomalies:
        return normal, None, np.zeros(0, np.int64)
    kinds = rng.integers(len(PSEUDO_ANOMALIES), size=len(clips))
    perturbed = torch.stack(
        [pseudo_anomaly(c, PSEUDO_ANOMALIES[k], gen).float() for c, k in zip(clips, kinds, strict=True)]
    )
    return normal, lower(perturbed), n_attr + kinds


def _map_batch(cache: MapCache, labels, idx, frames, gen, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """Random time crops of the chosen clips' cached maps; with pseudo-anomalies on, half of them perturbed."""
    normal, perturbed, classes = cache
    maps, targets = [], []
    for i in idx:
        if perturbed is not None and rng.random() < 0.5:
            maps.append(perturbed[i])
            targets.append(int(classes[i]))
        else:
            maps.append(normal[i])
            targets.append(int(labels[i]))
    return crop_maps(torch.stack(maps), frames, gen), torch.tensor(targets)


def steps_per_run(n_clips: int, n_target: int, cfg: TrainConfig) -> int:
    """How many optimizer steps :func:`train_local` takes (for progress bars)."""
    n = (n_clips - n_target) + _target_draws(n_clips - n_target, n_target, cfg.target_fraction)
    return math.ceil(n / cfg.batch_size) * cfg.epochs
