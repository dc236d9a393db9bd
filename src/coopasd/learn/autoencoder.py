"""Training of the frame autoencoder (:mod:`coopasd.model.frame_autoencoder`) on a participant's normal clips.

Centralized, local-only and federated modes all call :func:`train_frame_autoencoder` from the same place
as the encoder's training (:func:`coopasd.learn.participant.train_encoder`), for as many epochs: in a
federated run each round's epochs start from the global autoencoder and the server averages the
factories' autoencoders with their encoders.
"""

from __future__ import annotations

import numpy as np
import torch

from coopasd.model.embed import pick_device
from coopasd.model.frame_autoencoder import CONTEXT, FrameAutoencoder

STEPS_PER_EPOCH = 50  # optimizer steps per epoch, whatever the number of clips (see the module doc)
BATCH = 256  # windows per step, drawn at random from all clips
SCALING_WINDOWS = 50_000  # windows the input scaling is fitted on, at most
LR = 1e-3  # Adam


def _frames(waves: np.ndarray) -> torch.Tensor:
    """``(n, frames, bins)`` normalized log-mel frames of ``(n, samples)`` waves."""
    with torch.no_grad():
        batches = [torch.as_tensor(waves[i : i + 32], dtype=torch.float32) for i in range(0, len(waves), 32)]
        return torch.cat([FrameAutoencoder.frames(batch) for batch in batches])


def _draw(frames: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """``(count, CONTEXT * bins)`` windows of consecutive frames at random clips and times."""
    n, length, bins = frames.shape
    clip = torch.randint(n, (count,), generator=gen)
    start = torch.randint(length - CONTEXT + 1, (count,), generator=gen)
    return frames[clip[:, None], start[:, None] + torch.arange(CONTEXT)].reshape(count, CONTEXT * bins)


def train_frame_autoencoder(
    ae: FrameAutoencoder, waves: np.ndarray, epochs: int, seed: int, device: str = "auto"
) -> list[float]:
    """Train ``ae`` in place on ``(n, samples)`` normal waves; returns each epoch's mean loss.

    An epoch is :data:`STEPS_PER_EPOCH` steps of :data:`BATCH` windows drawn with replacement: 20 clips
    and 200 clips get the same optimization, so local-only, centralized and federated training differ
    in the data they see, not in how long they train. The input scaling is fitted on the first call's
    clips (a factory's own, or all of them pooled) and kept after.
    """
    if epochs <= 0 or len(waves) == 0:
        return []
    dev = pick_device(device)
    gen = torch.Generator().manual_seed(seed)
    frames = _frames(waves)
    if frames.shape[1] < CONTEXT:
        raise ValueError(f"clips of {waves.shape[1]} samples have fewer than {CONTEXT} log-mel frames")
    n_windows = frames.shape[0] * (frames.shape[1] - CONTEXT + 1)
    ae.fit_scaling(_draw(frames, min(n_windows, SCALING_WINDOWS), gen))
    ae.to(dev).train()
    ae.requires_grad_(True)  # [train] freeze_backbone froze every encoder parameter but LoRA's, the AE's too
    optimizer = torch.optim.Adam(ae.parameters(), lr=LR)
    losses = []
    for _ in range(epochs):
        epoch = []
        for _ in range(STEPS_PER_EPOCH):
            loss = ae.window_errors(_draw(frames, BATCH, gen).to(dev)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch.append(loss.item())
        losses.append(float(np.mean(epoch)))
    ae.eval()
    return losses
