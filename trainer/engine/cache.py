"""Encode the dataset once: VAE latents and text embeddings, then free the text encoders.

The diffusers example re-runs CLIP and T5 every step and pads T5 to 512 tokens. Here captions
are encoded once, padded only to the longest caption (the transformer's cost grows with the
text length too; `pad_captions` pads them to the full length instead, as inference does), one
encoder at a time, and T5 and CLIP are dropped from memory before the
first training step. With several resolutions each image's latents are cached once per
resolution, but its caption is encoded once.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .data import Example, load_image
from .errors import StopRequested


@dataclass
class EncodedPrompts:
    text: torch.Tensor  # [N, L, D] T5 hidden states, all padded to the same length L
    pooled: torch.Tensor  # [N, P] CLIP pooled vectors


@dataclass
class CachedDataset:
    latents: list[torch.Tensor]  # per example [16, h, w], already shifted and scaled
    flipped: list[torch.Tensor] | None  # the same for the mirrored image (flip augmentation)
    captions: EncodedPrompts  # one row per image, not per example
    empty: EncodedPrompts  # the empty caption, for caption dropout
    samples: EncodedPrompts | None  # sample prompts, encoded as the pipeline would at inference
    buckets: list[tuple[int, int]]  # per example
    caption_rows: list[int]  # per example: its row in `captions`
    resolutions: list[int]  # per example: the resolution it was bucketed at

    def __len__(self) -> int:
        return len(self.latents)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image as a [3, H, W] float tensor in [-1, 1], the VAE's input range."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def caption_length(pipeline: object, captions: list[str], cap: int, pad: bool = False) -> tuple[int, int]:
    """T5 length (with end token) of the longest caption, capped (`pad`: the cap); and how many were cut."""
    lengths = [len(ids) for ids in pipeline.tokenizer_2(captions, padding=False).input_ids]  # type: ignore[attr-defined]
    return cap if pad else min(max(lengths), cap), sum(length > cap for length in lengths)


@torch.no_grad()
def encode_prompt_sets(
    pipeline: object, sets: list[tuple[list[str], int]], device: torch.device, chunk: int = 16
) -> list[EncodedPrompts]:
    """Each (prompts, T5 length) set encoded as the pipeline's `encode_prompt` would, one encoder at a time.

    CLIP runs over every set first and is dropped; only then does T5 come to the device. The two
    never share it: T5-XXL alone is ~9.5 GB in bf16, which is what the low memory mode is about.
    The pipeline's own `_get_clip_prompt_embeds` / `_get_t5_prompt_embeds` are what `encode_prompt`
    calls, so the numbers are those of inference.
    """
    pipe: Any = pipeline
    pooled: list[torch.Tensor] = []
    clip = pipe.text_encoder.to(device)
    for prompts, _ in sets:
        parts = [pipe._get_clip_prompt_embeds(prompt=prompts[i : i + chunk], device=device, num_images_per_prompt=1)
                 for i in range(0, len(prompts), chunk)]  # fmt: skip
        pooled.append(torch.cat([part.cpu() for part in parts]))
    del clip
    _drop(pipe, "text_encoder")
    texts: list[torch.Tensor] = []
    t5 = pipe.text_encoder_2.to(device)
    for prompts, length in sets:
        parts = [pipe._get_t5_prompt_embeds(prompt=prompts[i : i + chunk], num_images_per_prompt=1,
                                            max_sequence_length=length, device=device, dtype=t5.dtype)
                 for i in range(0, len(prompts), chunk)]  # fmt: skip
        texts.append(torch.cat([part.cpu() for part in parts]))
    del t5
    _drop(pipe, "text_encoder_2")
    return [EncodedPrompts(text, pool) for text, pool in zip(texts, pooled)]


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, images: Iterable[Image.Image], device: torch.device) -> list[torch.Tensor]:
    """Normalised latents (the distribution's mode: FLUX's VAE variance is negligible).

    `images` may be a generator, so only one decoded image is held at a time.
    """
    dtype = next(vae.parameters()).dtype
    latents = []
    for image in images:
        pixels = to_tensor(image).unsqueeze(0).to(device=device, dtype=dtype)
        mode = vae.encode(pixels).latent_dist.mode()
        latents.append(((mode - vae.config.shift_factor) * vae.config.scaling_factor)[0].cpu())
    return latents


def _drop(pipeline: object, name: str) -> None:
    """Forget a text encoder for good and give its memory back (the pipeline holds the last reference)."""
    setattr(pipeline, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_cache(
    pipeline: object,
    examples: list[Example],
    *,
    max_sequence_length: int,
    pad_captions: bool = False,
    sample_prompts: list[str],
    sample_sequence_length: int,
    flip: bool,
    device: torch.device,
    offload: bool,
    log: Callable[[str], None],
    stop: Callable[[], bool] = lambda: False,
) -> CachedDataset:
    """Encode captions, sample prompts and images; afterwards only the VAE (and transformer) remain.

    Each text encoder visits the device alone and is then dropped. With `offload` (low memory
    mode) the VAE goes back to the CPU after encoding too, until samples are drawn. `stop()` is
    asked before each image; when it says so, `StopRequested` ends the encoding.
    """
    rows = {path: row for row, path in enumerate(dict.fromkeys(e.image_path for e in examples))}
    captions = list({e.image_path: e.caption for e in examples}.values())  # one per image, in example order
    length, cut = caption_length(pipeline, captions, max_sequence_length, pad_captions)
    if cut:
        log(f"{cut} caption(s) longer than {max_sequence_length} T5 tokens were cut")
    padded = ("padded, as inference pads" if length == sample_sequence_length else
              f"padded to max_sequence_length; inference pads to {sample_sequence_length}, so its T5 states differ")
    why = padded if pad_captions else "the limit" if cut else "the longest caption's length" + (
        f", not the {sample_sequence_length} of inference; pad_captions trains on inference's"
        if length < sample_sequence_length else "")
    log(f"encoding {len(captions)} captions at {length} T5 tokens ({why})")
    sets = [(captions, length), ([""], length)] + ([(sample_prompts, sample_sequence_length)] if sample_prompts else [])
    encoded, empty, *rest = encode_prompt_sets(pipeline, sets, device)
    samples = rest[0] if rest else None
    if stop():
        raise StopRequested

    vae = pipeline.vae  # type: ignore[attr-defined]
    vae.to(device)
    resolutions = sorted({e.resolution for e in examples})
    at = f" at {', '.join(map(str, resolutions))} px ({len(examples)} latents)" if len(resolutions) > 1 else ""
    log(f"encoding {len(rows)} images{at} with the VAE" + (" (and their mirror images)" if flip else ""))

    def images(flipped: bool) -> Iterator[Image.Image]:
        for example in examples:
            if stop():
                raise StopRequested
            yield load_image(example.image_path, example.bucket, flip=flipped)

    latents = encode_latents(vae, images(False), device)
    flipped = encode_latents(vae, images(True), device) if flip else None
    if offload:
        vae.to("cpu")  # needed again only to decode samples
    return CachedDataset(latents, flipped, encoded, empty, samples, [e.bucket for e in examples],
                         [rows[e.image_path] for e in examples], [e.resolution for e in examples])  # fmt: skip
