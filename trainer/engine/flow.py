"""Rectified-flow pieces of FLUX training: packing latents into tokens, position ids, and the
distribution of noise levels a step trains on."""

from __future__ import annotations

import math

import torch


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] latents to [B, H/2 * W/2, 4C] tokens: FLUX sees 2x2 latent patches."""
    b, c, h, w = latents.shape
    patches = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def image_ids(latent_height: int, latent_width: int) -> torch.Tensor:
    """Rotary position ids (0, row, column) of each packed token, as the pipeline builds them."""
    rows, cols = latent_height // 2, latent_width // 2
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3)


def flux_mu(image_tokens: int) -> float:
    """FLUX's resolution-dependent shift: more tokens, more time spent at high noise.

    The line through (256 tokens, 0.5) and (4096 tokens, 1.15), as in FLUX.1's scheduler config.
    """
    return 0.5 + (1.15 - 0.5) * (image_tokens - 256) / (4096 - 256)


def sample_sigmas(
    count: int, method: str, image_tokens: int, mean: float, std: float, generator: torch.Generator
) -> torch.Tensor:
    """Noise levels in (0, 1) for one batch.

    - uniform: every level equally often.
    - sigmoid: sigmoid of a standard normal, more weight on the middle levels, where the model
      learns most (SD3's logit-normal with mean 0, std 1).
    - logit_normal: the same with `mean` and `std`.
    - shift: logit-normal, then shifted towards noise by FLUX's resolution rule; matches the
      schedule the base is sampled with, so training spends its steps where inference does.
    """
    if method == "uniform":
        return torch.rand(count, generator=generator)
    normal = torch.randn(count, generator=generator)
    if method == "sigmoid":
        return torch.sigmoid(normal)
    sigmas = torch.sigmoid(normal * std + mean)
    if method == "shift":
        shift = math.exp(flux_mu(image_tokens))
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)  # = e^mu / (e^mu + (1/t - 1))
    return sigmas
