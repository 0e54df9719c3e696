"""The untrained demo pipeline: FLUX.1's architecture at a small width, with word-level tokens.

It differs from the `tiny` preset in three ways, each for a reason found while pretraining:
- The tokenizers know every demo word as one token (and fall back to characters for anything
  else, such as a trigger word), so "red" is one vector, not three letters to be composed.
- The VAE keeps FLUX's 8x downsampling (16 image tokens at 64 px) but is narrow, without the
  mid-block attention: on two shared CPU cores a 4x VAE (64 tokens) made each pretraining step
  about four times dearer, too slow to learn anything in the time budget.
- T5's relative-position bias is set, not random: one head looks at the previous word, one at the
  next. FLUX gives all text tokens the same position (txt_ids are zero), so word order reaches
  the transformer only through T5; a random bias is too weak for "red" in "a red circle on a
  blue background" to differ from "red" in "a blue circle on a red background".
The text encoders stay frozen (random but seeded); only the VAE and transformer are trained.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .scenes import VOCAB

if TYPE_CHECKING:
    from diffusers import FluxPipeline


@dataclass(frozen=True)
class DemoSpec:
    double_blocks: int = 2
    single_blocks: int = 4
    heads: int = 4
    head_dim: int = 32
    text_width: int = 128
    text_layers: int = 2
    vae_channels: tuple[int, ...] = (16, 32, 32, 32)  # four levels: 8x downsampling like FLUX
    seed: int = 0

    @property
    def rope_axes(self) -> tuple[int, int, int]:
        # FLUX's split of each head's rotary dims over (text index, row, column), kept even.
        row = (self.head_dim * 7 // 16) // 2 * 2
        return (self.head_dim - 2 * row, row, row)


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [chr(b) for b in printable]
    chars += [chr(256 + i) for i in range(256 - len(printable))]
    return chars


def build_clip_tokenizer() -> "object":
    """CLIP BPE over characters, with merges that assemble each demo word into a single token."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for char in _byte_alphabet():
            vocab[char + suffix] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in VOCAB:
        # left to right: "r e", "re d</w>": the last merge carries the end-of-word mark
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        built = pieces[0]
        for piece in pieces[1:]:
            merge = (built, piece)
            built += piece
            if merge not in merges:
                merges.append(merge)
            vocab.setdefault(built, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_t5_tokenizer() -> "object":
    """T5 unigram over whole demo words (scored above any split) and single characters."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + word, -1.0) for word in VOCAB]
    for char in string.ascii_letters + string.digits + string.punctuation:
        pieces += [("▁" + char, -3.0), (char, -3.5)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _neighbour_bias(t5: "object", strength: float = 6.0) -> None:
    """Make T5 head 0 attend to the previous token and head 1 to the next (see module doc)."""
    import torch

    bias = t5.encoder.block[0].layer[0].SelfAttention.relative_attention_bias  # [buckets, heads]
    buckets = bias.weight.shape[0] // 2  # bidirectional: the upper half holds positive offsets
    with torch.no_grad():
        bias.weight.zero_()
        bias.weight[1, 0] = strength  # offset -1: the previous token
        bias.weight[buckets + 1, 1] = strength  # offset +1: the next token


def build_demo_pipeline(spec: DemoSpec | None = None) -> "FluxPipeline":
    """A seeded, untrained demo pipeline in fp32 on the CPU, in eval mode, nothing trainable."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    spec = spec or DemoSpec()
    clip_tokenizer, t5_tokenizer = build_clip_tokenizer(), build_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        transformer = FluxTransformer2DModel(
            in_channels=64,
            num_layers=spec.double_blocks,
            num_single_layers=spec.single_blocks,
            attention_head_dim=spec.head_dim,
            num_attention_heads=spec.heads,
            joint_attention_dim=spec.text_width,
            pooled_projection_dim=spec.text_width,
            guidance_embeds=True,
            axes_dims_rope=spec.rope_axes,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(spec.vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(spec.vae_channels),
            block_out_channels=spec.vae_channels,
            layers_per_block=1,
            latent_channels=16,
            # 4 groups of 4+ channels. With as many groups as channels GroupNorm is an instance
            # norm, which maps every flat colour to zero, and the decoder cannot paint one; with
            # one group the VAE learned far slower (measured: 59 vs 37/255 error after 80-120 steps).
            norm_num_groups=4,
            scaling_factor=1.0,  # measured on the data after the VAE is trained
            shift_factor=0.0,
            use_quant_conv=False,
            use_post_quant_conv=False,
            mid_block_add_attention=False,
        )
        clip = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(clip_tokenizer), hidden_size=spec.text_width, intermediate_size=spec.text_width * 2,
                num_hidden_layers=spec.text_layers, num_attention_heads=2, max_position_embeddings=77,
                projection_dim=spec.text_width, bos_token_id=0, eos_token_id=1, pad_token_id=1,
            )
        )  # fmt: skip
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=len(t5_tokenizer), d_model=spec.text_width, d_kv=spec.text_width // 2,
                d_ff=spec.text_width * 2, num_layers=spec.text_layers, num_heads=2, feed_forward_proj="gated-gelu",
                is_encoder_decoder=False, pad_token_id=0, eos_token_id=1,
            )
        )  # fmt: skip
        _neighbour_bias(t5)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )  # fmt: skip
    for model in (transformer, vae, clip, t5):
        model.eval()
        model.requires_grad_(False)
    return FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tokenizer,
        text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer,
    )  # fmt: skip
