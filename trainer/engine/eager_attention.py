"""The FLUX attention of eager training steps, in fewer operations than diffusers' processor.

Same arithmetic as diffusers' `FluxAttnProcessor` (projections, per-head RMSNorm of q and k, the
text tokens joined in front, rotary embedding, scaled dot-product attention, output projections),
but with the rotary embedding as one complex multiplication of each (even, odd) pair by
`cos + i sin`, forward and backward, as FLUX's reference code does (diffusers splits, negates,
stacks, multiplies twice and adds, and the backward mirrors that). The complex factors are made
once per forward and shared by every block. Everything else is diffusers' code path (its
q/k RMSNorm is torch's fused one in diffusers 0.42).

Each block rotates q and k (6 blocks on the bench base, 57 on FLUX.1), forward and backward: on
a 2-core CPU this took about 4% off an eager bench step; on a GPU it is about ten fewer kernel
launches per rotation, over a thousand per FLUX.1 step. Compiled training keeps diffusers' processor, as
Inductor fuses the same operations itself (and handles complex tensors less well). Outputs equal
diffusers' up to float rounding (tested). Only attentions that use diffusers' own FLUX processor
are switched, and everything is put back on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _rotate(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """x [B, S, H, D] as D/2 (real, imaginary) pairs, times factors [S, 1, D/2] (complex)."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * factors).flatten(-2).to(x.dtype)


class _RotaryFactors:
    """cos + i sin per position and frequency, from diffusers' (cos, sin) pair (each frequency
    repeated twice along the last axis): computed for the first block of a forward, then reused
    while the very same tensors come back (held here, so their memory cannot be reused by a later
    forward's pair while this one is remembered)."""

    def __init__(self) -> None:
        self._rotary: tuple[torch.Tensor, torch.Tensor] | None = None
        self._factors = torch.empty(0)

    def __call__(self, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        cos, sin = rotary
        if self._rotary is None or self._rotary[0] is not cos or self._rotary[1] is not sin:
            self._factors = torch.complex(cos[:, ::2].float(), sin[:, ::2].float()).unsqueeze(1)
            self._rotary = (cos, sin)
        return self._factors


class EagerFluxAttention:
    """A drop-in processor for `FluxAttention` (double and single blocks)."""

    def __init__(self, factors: _RotaryFactors) -> None:
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        self._factors = factors
        self._projections = _get_qkv_projections
        self._attend = dispatch_attention_fn
        self._attention_backend = None
        self._parallel_config = None

    def __call__(  # type: ignore[no-untyped-def]
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None
    ):
        query, key, value, text_query, text_key, text_value = self._projections(attn, hidden_states, encoder_hidden_states)
        heads = (-1, attn.head_dim)
        query = attn.norm_q(query.unflatten(-1, heads))
        key = attn.norm_k(key.unflatten(-1, heads))
        value = value.unflatten(-1, heads)
        if attn.added_kv_proj_dim is not None:
            query = torch.cat([attn.norm_added_q(text_query.unflatten(-1, heads)), query], dim=1)
            key = torch.cat([attn.norm_added_k(text_key.unflatten(-1, heads)), key], dim=1)
            value = torch.cat([text_value.unflatten(-1, heads), value], dim=1)
        if image_rotary_emb is not None:
            factors = self._factors(image_rotary_emb)
            query, key = _rotate(query, factors), _rotate(key, factors)
        hidden_states = self._attend(
            query, key, value, attn_mask=attention_mask, backend=self._attention_backend, parallel_config=self._parallel_config
        )
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return hidden_states
        text_tokens = encoder_hidden_states.shape[1]
        encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
            [text_tokens, hidden_states.shape[1] - text_tokens], dim=1
        )
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.contiguous()))
        return hidden_states, attn.to_add_out(encoder_hidden_states.contiguous())


def _switchable(attn: nn.Module) -> bool:
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    return type(attn.processor) is FluxAttnProcessor


@contextmanager
def eager_attention(transformer: nn.Module) -> Iterator[int]:
    """Use `EagerFluxAttention` in every block inside the `with`; yields how many were switched."""
    factors = _RotaryFactors()
    switched = []
    for block in [*transformer.transformer_blocks, *transformer.single_transformer_blocks]:
        attn = block.attn
        if _switchable(attn):
            processor = EagerFluxAttention(factors)
            processor._attention_backend = attn.processor._attention_backend  # as set_attention_backend left it
            processor._parallel_config = attn.processor._parallel_config
            switched.append((attn, attn.processor))
            attn.set_processor(processor)
    try:
        yield len(switched)
    finally:
        for attn, processor in switched:
            attn.set_processor(processor)
