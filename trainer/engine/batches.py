"""Turning the cached dataset into training batches, the model call, and the validation loss.

All randomness of a micro-step (order, flips, caption dropout, noise, noise levels) comes from
generators seeded by (seed, index), never from global state, so any step can be replayed alone:
that is what makes resume exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cache import CachedDataset
from .compiling import eager
from .flow import image_ids, pack, sample_sigmas


def seeded(seed: int, index: int, stream: int = 0) -> torch.Generator:
    """An independent generator per (seed, index, stream); large odd strides avoid overlaps."""
    return torch.Generator().manual_seed((seed * 1_000_003 + index * 7_919 + stream * 104_729) % (2**63))


class BatchPlan:
    """Which examples form micro-batch k: each epoch shuffles within buckets, then shuffles batches.

    Batches never mix buckets (all images in a batch share a size). The order of epoch e depends
    only on (seed, e), so batch k can be found without replaying the batches before it. With
    several resolutions an epoch visits every image at each of them.
    """

    def __init__(self, buckets: list[tuple[int, int]], batch_size: int, seed: int) -> None:
        self.groups: dict[tuple[int, int], list[int]] = {}
        for index, bucket in enumerate(buckets):
            self.groups.setdefault(bucket, []).append(index)
        self.batch_size, self.seed = batch_size, seed
        self.per_epoch = sum(math.ceil(len(g) / batch_size) for g in self.groups.values())
        self._epoch_cache: tuple[int, list[list[int]]] | None = None

    def batch(self, k: int) -> list[int]:
        epoch, position = divmod(k, self.per_epoch)
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self._epoch_cache = (epoch, self._epoch(epoch))
        return self._epoch_cache[1][position]

    def _epoch(self, epoch: int) -> list[list[int]]:
        generator = seeded(self.seed, epoch, stream=1)
        batches = []
        for bucket in sorted(self.groups):
            group = self.groups[bucket]
            order = [group[i] for i in torch.randperm(len(group), generator=generator).tolist()]
            batches += [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


@dataclass
class Batch:
    noisy: torch.Tensor  # [B, N, 64] packed latents mixed with noise
    target: torch.Tensor  # [B, N, 64] fp32: the velocity noise - latents
    sigmas: torch.Tensor  # [B] noise level in (0, 1)
    text: torch.Tensor  # [B, L, D] T5 states
    pooled: torch.Tensor  # [B, P] CLIP pooled
    img_ids: torch.Tensor  # [N, 3]
    txt_ids: torch.Tensor  # [L, 3] zeros, as FLUX uses

    def to(self, device: torch.device, dtype: torch.dtype) -> "Batch":
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return Batch(move(self.noisy), self.target.to(device), move(self.sigmas), move(self.text),
                     move(self.pooled), move(self.img_ids), move(self.txt_ids))  # fmt: skip


def noised(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectified flow: x_t = (1 - t) x_0 + t noise, and the velocity to predict, noise - x_0."""
    s = sigmas.view(-1, 1, 1)
    return (1 - s) * latents + s * noise, noise - latents


def make_batch(
    cache: CachedDataset,
    indices: list[int],
    generator: torch.Generator,
    *,
    caption_dropout: float,
    sampling: str,
    logit_mean: float,
    logit_std: float,
) -> Batch:
    """Assemble one micro-batch on the CPU; draws happen in a fixed order from `generator`."""
    count = len(indices)
    flips = (torch.rand(count, generator=generator) < 0.5).tolist() if cache.flipped else [False] * count
    latents = torch.stack([(cache.flipped if flip else cache.latents)[i] for i, flip in zip(indices, flips)])  # type: ignore[index]
    drops = (torch.rand(count, generator=generator) < caption_dropout).tolist()
    rows = [cache.caption_rows[i] for i in indices]
    text = torch.stack([cache.empty.text[0] if drop else cache.captions.text[r] for r, drop in zip(rows, drops)])
    pooled = torch.stack([cache.empty.pooled[0] if drop else cache.captions.pooled[r] for r, drop in zip(rows, drops)])
    clean = pack(latents.float())
    noise = torch.randn(clean.shape, generator=generator)
    sigmas = sample_sigmas(count, sampling, clean.shape[1], logit_mean, logit_std, generator)
    noisy, target = noised(clean, noise, sigmas)
    return Batch(noisy, target, sigmas, text, pooled, image_ids(*latents.shape[-2:]), torch.zeros(text.shape[1], 3))


def predict(transformer: torch.nn.Module, batch: Batch, guidance: float | None) -> torch.Tensor:
    """The transformer's velocity for a batch (timestep in [0, 1]: the model scales it by 1000)."""
    embedded_guidance = None
    if guidance is not None and transformer.config.guidance_embeds:
        embedded_guidance = torch.full_like(batch.sigmas, guidance)
    return transformer(
        hidden_states=batch.noisy,
        timestep=batch.sigmas,
        guidance=embedded_guidance,
        pooled_projections=batch.pooled,
        encoder_hidden_states=batch.text,
        txt_ids=batch.txt_ids,
        img_ids=batch.img_ids,
        return_dict=False,
    )[0]


def loss_of(transformer: torch.nn.Module, batch: Batch, guidance: float | None) -> torch.Tensor:
    """Mean squared error to the velocity, computed in fp32 whatever the model's precision."""
    return F.mse_loss(predict(transformer, batch, guidance).float(), batch.target)


def validation_batches(cache: CachedDataset, timesteps: list[float], seed: int, count: int = 4) -> list[Batch]:
    """Fixed batches: up to `count` examples, each at every validation timestep with fixed noise.

    Same inputs every time, so the number moves only when the adapter does. With several
    resolutions only the largest is measured (where detail shows, and what samples are drawn at),
    with the same picks and noise as a run at that resolution alone, so the numbers compare.
    """
    largest = max(cache.resolutions)
    candidates = [i for i, side in enumerate(cache.resolutions) if side == largest]
    size = len(candidates)
    picks = sorted({round(j * (size - 1) / max(1, count - 1)) for j in range(min(count, size))})
    batches = []
    for j in picks:
        i, row = candidates[j], cache.caption_rows[candidates[j]]
        generator = seeded(seed, j, stream=2)
        clean = pack(cache.latents[i].float().unsqueeze(0)).expand(len(timesteps), -1, -1)
        noise = torch.randn(clean.shape, generator=generator)
        sigmas = torch.tensor(timesteps, dtype=torch.float32)
        noisy, target = noised(clean, noise, sigmas)
        text = cache.captions.text[row].unsqueeze(0).expand(len(timesteps), -1, -1)
        pooled = cache.captions.pooled[row].unsqueeze(0).expand(len(timesteps), -1)
        h, w = cache.latents[i].shape[-2:]
        batches.append(Batch(noisy, target, sigmas, text, pooled, image_ids(h, w), torch.zeros(text.shape[1], 3)))
    return batches


@torch.no_grad()
@eager()  # the same numbers with or without `compile`, and no compilation for the validation shapes
def validation_loss(
    transformer: torch.nn.Module, batches: list[Batch], guidance: float | None, device: torch.device, dtype: torch.dtype
) -> float:
    losses = [loss_of(transformer, batch.to(device, dtype), guidance).item() for batch in batches]
    return sum(losses) / len(losses)
