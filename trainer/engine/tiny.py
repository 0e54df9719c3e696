"""A FLUX.1-architecture pipeline built offline from configs, for tests (its weights are random, so it draws noise).

Every part of FLUX.1 is here at a small width: the MM-DiT transformer (double and single blocks,
guidance embedding), a 16-channel VAE with FLUX's scale and shift, a CLIP text model for the
pooled vector and a T5 encoder for the token sequence, and their tokenizers. The tokenizers are
character level and built in code, so nothing is ever downloaded. Weights are random but seeded:
the same spec always gives the same pipeline, bit for bit.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffusers import FluxPipeline

    from .presets import BasePreset


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a FLUX-architecture pipeline. The defaults make the `tiny` preset."""

    double_blocks: int = 1
    single_blocks: int = 2
    heads: int = 2
    head_dim: int = 32
    text_width: int = 32  # CLIP hidden size (= pooled projection) and T5 d_model (= joint dim)
    text_layers: int = 2
    vae_channels: tuple[int, ...] = (8, 8, 16, 16)  # four levels: 8x downsampling like FLUX
    seed: int = 0

    @property
    def rope_axes(self) -> tuple[int, int, int]:
        # FLUX splits each head's rotary dims over (text index, row, column); they must sum to
        # head_dim. Keep FLUX's proportions (16, 56, 56 of 128), rounded to even numbers.
        row = (self.head_dim * 7 // 16) // 2 * 2
        return (self.head_dim - 2 * row, row, row)


# The bench "small" base: 2 double + 4 single blocks, 4 heads x 64, text width 128.
SMALL_SPEC = TinySpec(double_blocks=2, single_blocks=4, heads=4, head_dim=64, text_width=128)


def _byte_alphabet() -> list[str]:
    """The 256 printable characters byte-level BPE uses to stand for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_clip_tokenizer() -> "object":
    """A CLIP byte-level BPE tokenizer with no merges: every character is its own token."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    alphabet = _byte_alphabet()
    for suffix in ("", "</w>"):  # a word's last character carries the end-of-word mark
        for char in alphabet:
            vocab[char + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_t5_tokenizer() -> "object":
    """A T5 unigram tokenizer over single characters (with and without the word-start mark)."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces += [("▁" + char, -3.0), (char, -3.5)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _transformer(spec: TinySpec) -> "object":
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        in_channels=64,  # 16 latent channels packed 2x2
        num_layers=spec.double_blocks,
        num_single_layers=spec.single_blocks,
        attention_head_dim=spec.head_dim,
        num_attention_heads=spec.heads,
        joint_attention_dim=spec.text_width,  # = T5 d_model
        pooled_projection_dim=spec.text_width,  # = CLIP hidden size
        guidance_embeds=True,  # like FLUX.1-dev, so the guidance path is exercised
        axes_dims_rope=spec.rope_axes,
    )


def _vae(spec: TinySpec) -> "object":
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(spec.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(spec.vae_channels),
        block_out_channels=spec.vae_channels,
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=min(spec.vae_channels),
        scaling_factor=0.3611,  # FLUX.1's VAE statistics
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _text_encoders(spec: TinySpec, clip_vocab: int, t5_vocab: int) -> tuple["object", "object"]:
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=clip_vocab,
            hidden_size=spec.text_width,
            intermediate_size=spec.text_width * 2,
            num_hidden_layers=spec.text_layers,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=spec.text_width,
            bos_token_id=0,
            eos_token_id=1,  # the pooled vector is read at the first end-of-text token
            pad_token_id=1,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=t5_vocab,
            d_model=spec.text_width,
            d_kv=spec.text_width // 2,
            d_ff=spec.text_width * 2,
            num_layers=spec.text_layers,
            num_heads=2,
            feed_forward_proj="gated-gelu",  # T5 v1.1, as FLUX uses
            is_encoder_decoder=False,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    return clip, t5


def build_tiny_pipeline(spec: TinySpec | None = None) -> "FluxPipeline":
    """Build a seeded FLUX pipeline from configs, in fp32 on the CPU, in eval mode."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    spec = spec or TinySpec()
    clip_tokenizer, t5_tokenizer = build_clip_tokenizer(), build_t5_tokenizer()
    # fork_rng keeps the caller's global RNG untouched: building a base is not a training step.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        transformer, vae = _transformer(spec), _vae(spec)
        clip, t5 = _text_encoders(spec, len(clip_tokenizer), len(t5_tokenizer))
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )  # fmt: skip
    for model in (transformer, vae, clip, t5):
        model.eval()  # models built from configs start in train mode (dropout on)
        model.requires_grad_(False)
    return FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tokenizer,
        text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer,
    )  # fmt: skip


def save_tiny_pipeline(folder: str | Path, spec: TinySpec | None = None, preset: "BasePreset | None" = None) -> Path:
    """Write the pipeline as a diffusers folder with its preset defaults (tiny's unless given)."""
    from .presets import BASE_PRESETS, write_preset_file

    folder = Path(folder)
    build_tiny_pipeline(spec).save_pretrained(folder)
    write_preset_file(folder, preset or BASE_PRESETS["tiny"])
    return folder


def tiny_base_dir(cache_dir: str | Path | None = None) -> Path:
    """The tiny base as a diffusers folder, built once and reused (for the web side and demos).

    Lives in `presets.tiny_base_folder(cache_dir)`, which the web side looks in too. Written to a
    temporary name first, so two processes racing to build it never see a half-written folder.
    """
    import shutil
    import tempfile

    from .presets import tiny_base_folder

    folder = tiny_base_folder(cache_dir)
    root = folder.parent
    if (folder / "model_index.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".tiny-", dir=root))
    save_tiny_pipeline(partial)
    try:
        partial.rename(folder)
    except OSError:  # another process finished first: keep theirs
        shutil.rmtree(partial, ignore_errors=True)
    return folder
