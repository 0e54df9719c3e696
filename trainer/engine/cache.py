"""Encode the dataset once: VAE latents and text embeddings, then free the text encoders.

The diffusers example re-runs CLIP and T5 every step and pads T5 to 512 tokens. Here captions
are encoded once, padded only to the longest caption (the transformer's cost grows with the
text length too), and T5 and CLIP are dropped from memory before the first training step.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .data import Example, load_image


@dataclass
class EncodedPrompts:
    text: torch.Tensor  # [N, L, D] T5 hidden states, all padded to the same length L
    pooled: torch.Tensor  # [N, P] CLIP pooled vectors


@dataclass
class CachedDataset:
    latents: list[torch.Tensor]  # per example [16, h, w], already shifted and scaled
    flipped: list[torch.Tensor] | None  # the same for the mirrored image (flip augmentation)
    captions: EncodedPrompts
    empty: EncodedPrompts  # the empty caption, for caption dropout
    samples: EncodedPrompts | None  # sample prompts, encoded as the pipeline would at inference
    buckets: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.latents)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL RGB image as a [3, H, W] float tensor in [-1, 1], the VAE's input range."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def caption_length(pipeline: object, captions: list[str], cap: int) -> tuple[int, int]:
    """T5 length (with end token) of the longest caption, capped; and how many were cut."""
    lengths = [len(ids) for ids in pipeline.tokenizer_2(captions, padding=False).input_ids]  # type: ignore[attr-defined]
    return min(max(lengths), cap), sum(length > cap for length in lengths)


@torch.no_grad()
def encode_prompts(pipeline: object, prompts: list[str], length: int, device: torch.device) -> EncodedPrompts:
    """CLIP pooled vectors and T5 states through the pipeline's own encode_prompt (same as inference)."""
    texts, pooled = [], []
    for start in range(0, len(prompts), 16):
        chunk = prompts[start : start + 16]
        embeds, pooled_embeds, _ = pipeline.encode_prompt(  # type: ignore[attr-defined]
            prompt=chunk, prompt_2=None, device=device, max_sequence_length=length
        )
        texts.append(embeds.cpu())
        pooled.append(pooled_embeds.cpu())
    return EncodedPrompts(torch.cat(texts), torch.cat(pooled))


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, images: list[Image.Image], device: torch.device) -> list[torch.Tensor]:
    """Normalised latents (the distribution's mode: FLUX's VAE variance is negligible)."""
    dtype = next(vae.parameters()).dtype
    latents = []
    for image in images:
        pixels = to_tensor(image).unsqueeze(0).to(device=device, dtype=dtype)
        mode = vae.encode(pixels).latent_dist.mode()
        latents.append(((mode - vae.config.shift_factor) * vae.config.scaling_factor)[0].cpu())
    return latents


def free_text_encoders(pipeline: object) -> None:
    """Drop CLIP and T5 (T5-XXL alone is ~9 GB in bf16) once every prompt is encoded."""
    pipeline.text_encoder = None  # type: ignore[attr-defined]
    pipeline.text_encoder_2 = None  # type: ignore[attr-defined]
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_cache(
    pipeline: object,
    examples: list[Example],
    *,
    max_sequence_length: int,
    sample_prompts: list[str],
    sample_sequence_length: int,
    flip: bool,
    device: torch.device,
    offload: bool,
    log: Callable[[str], None],
) -> CachedDataset:
    """Encode captions, sample prompts and images; afterwards only the VAE remains.

    With `offload`, each encoder visits the device only while it is used (low memory mode).
    """
    captions = [example.caption for example in examples]
    length, cut = caption_length(pipeline, captions, max_sequence_length)
    if cut:
        log(f"{cut} caption(s) longer than {max_sequence_length} T5 tokens were cut")
    log(f"encoding {len(captions)} captions ({length} T5 tokens, not {sample_sequence_length})")
    encoders = (pipeline.text_encoder, pipeline.text_encoder_2)  # type: ignore[attr-defined]
    for encoder in encoders:
        encoder.to(device)
    encoded = encode_prompts(pipeline, captions, length, device)
    empty = encode_prompts(pipeline, [""], length, device)
    samples = encode_prompts(pipeline, sample_prompts, sample_sequence_length, device) if sample_prompts else None
    free_text_encoders(pipeline)

    vae = pipeline.vae  # type: ignore[attr-defined]
    vae.to(device)
    log(f"encoding {len(examples)} images with the VAE" + (" (and their mirror images)" if flip else ""))
    latents = encode_latents(vae, [load_image(e.image_path, e.bucket) for e in examples], device)
    flipped = encode_latents(vae, [load_image(e.image_path, e.bucket, flip=True) for e in examples], device) if flip else None
    if offload:
        vae.to("cpu")  # needed again only to decode samples
    return CachedDataset(latents, flipped, encoded, empty, samples, [e.bucket for e in examples])
