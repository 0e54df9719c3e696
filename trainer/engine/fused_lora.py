"""The adapted linear layers' training forward and backward as one autograd function each.

peft computes an adapted layer as `base(x) + lora_B(lora_A(x)) * scaling`: five operations
forward (the base matmul, two adapter matmuls, a multiply, an add) and, backward, separate
matmuls for the input's gradient through the base and through the adapter, then an add of the two
input-sized results. With a frozen base none of that separation is needed. `_LoraMatmul` does the
same arithmetic with the adapter folded into the base's matmuls:

    forward   h = x A^T;            y = (x W^T + b) + s * h B^T      (two matmuls and one addmm)
    backward  dh = s * dy B;        dB = s * dy^T h;    dA = dh^T x;    dx = dy W + dh A  (one addmm)

The layers that read the same input (each attention's q, k and v; in the double blocks also the
text stream's q, k and v) go further, as one layer: their base weights are concatenated once
(the original modules keep views of it, so no memory is added), their down matrices are
stacked, and the up matrices act block-diagonally. That is diffusers' own fused-projection path
(`attn.to_qkv`, `attn.to_added_qkv`), with the adapter inside it.

Nothing about the adapter changes: its parameters stay peft's (same names, same state dict, same
checkpoints and saved files), and whenever a layer is not in the plain training state (adapter
disabled or merged, another adapter active, dropout, a DoRA variant, a quantized or FP8 base) it
runs peft's own forward. Measured on the bench base on a 2-core CPU (bench/README-train.md), an
eager step took about 8% less time; on a GPU the gain is in kernel launches, several thousand
fewer per FLUX.1-dev step. Losses equal peft's up to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

ADAPTER = "default"  # peft's name for the engine's one adapter


class _LoraMatmul(torch.autograd.Function):
    """y = x W^T + b + s (x A^T) B^T for k stacked layers: W [S, in] (rows of the k layers in
    turn), A [k r, in] (their down matrices stacked), B block-diagonal, given as its k blocks
    [out_i, r]. W and b are frozen."""

    @staticmethod
    def forward(ctx, x, weight, bias, scale, a_stacked, *ups):  # type: ignore[no-untyped-def]
        x2 = x.reshape(-1, x.shape[-1])
        a, b_parts = a_stacked, ups
        if a.dtype != x.dtype:  # bf16 matmuls on the fp32 adapter (CUDA mixed precision)
            a, b_parts = a.to(x.dtype), tuple(up.to(x.dtype) for up in ups)
        h = torch.mm(x2, a.t())
        y = torch.addmm(bias.to(x.dtype), x2, weight.t()) if bias is not None else torch.mm(x2, weight.t())
        if len(b_parts) == 1:  # the adapter's output, added in place
            y.addmm_(h, b_parts[0].t(), alpha=scale)
        else:
            for rows, cols, up in _blocks(b_parts):
                y[:, rows].addmm_(h[:, cols], up.t(), alpha=scale)
        ctx.save_for_backward(x2, h, weight, a, *b_parts)
        ctx.scale, ctx.shape = scale, x.shape
        ctx.dtypes = (a_stacked.dtype, [up.dtype for up in ups])
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        x2, h, weight, a, *b_parts = ctx.saved_tensors
        scale = ctx.scale
        dy = grad.reshape(-1, grad.shape[-1]).to(x2.dtype)
        if len(b_parts) == 1:
            dh, d_ups = torch.mm(dy, b_parts[0]), [torch.mm(dy.t(), h)]
        else:
            d_ups = [torch.mm(dy[:, rows].t(), h[:, cols]) for rows, cols, _ in _blocks(b_parts)]
            dh = torch.cat([torch.mm(dy[:, rows], up) for rows, _, up in _blocks(b_parts)], dim=1)
        if scale != 1:
            dh.mul_(scale)
            for d_up in d_ups:
                d_up.mul_(scale)
        d_a = torch.mm(dh.t(), x2)
        dx = torch.mm(dy, weight).addmm_(dh, a).view(ctx.shape) if ctx.needs_input_grad[0] else None
        a_dtype, up_dtypes = ctx.dtypes
        return (dx, None, None, None, d_a.to(a_dtype), *(d.to(t) for d, t in zip(d_ups, up_dtypes)))


def _blocks(ups: list[torch.Tensor]) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """(output rows, rank columns, up matrix) of each stacked layer."""
    row = col = 0
    for up in ups:
        out_features, rank = up.shape
        yield slice(row, row + out_features), slice(col, col + rank), up
        row, col = row + out_features, col + rank


def _plain(layer: nn.Module) -> bool:
    """Whether a peft LoRA linear is in the state `_LoraMatmul` computes exactly: the one adapter,
    active and unmerged, no dropout, variant or bias of its own, over a plain (unquantized) linear
    base."""
    return (
        not layer.disable_adapters
        and not layer.merged
        and list(layer.active_adapters) == [ADAPTER]
        and ADAPTER in layer.lora_A
        and ADAPTER not in getattr(layer, "lora_variant", {})
        and isinstance(layer.lora_dropout[ADAPTER], nn.Identity)
        and layer.lora_B[ADAPTER].bias is None
        and type(layer.base_layer) is nn.Linear
    )


def _same_dtype_as_peft(layer: nn.Module, x: torch.Tensor) -> bool:
    """peft casts the input to the adapter's dtype unless told not to (`training_precision` does,
    for bf16 matmuls on fp32 adapter weights); the fused path multiplies in the input's dtype, so
    it takes over only where both agree."""
    return x.dtype == layer.lora_A[ADAPTER].weight.dtype or not getattr(layer, "cast_input_dtype_enabled", True)


def _fused_forward(layers: list[nn.Module], weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    a = layers[0].lora_A[ADAPTER].weight if len(layers) == 1 else torch.cat([l.lora_A[ADAPTER].weight for l in layers])
    ups = [l.lora_B[ADAPTER].weight for l in layers]
    return _LoraMatmul.apply(x, weight, bias, layers[0].scaling[ADAPTER], a, *ups)


def _peft_linear_class() -> type:
    from peft.tuners.lora.layer import Linear

    return Linear


class _FusedLinear:
    """Mixed into peft's LoRA `Linear` (by swapping the instance's class) for the duration."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # type: ignore[no-untyped-def]
        if args or kwargs or not _plain(self) or not _same_dtype_as_peft(self, x):
            return super().forward(x, *args, **kwargs)  # type: ignore[misc]
        return _fused_forward([self], self.base_layer.weight, self.base_layer.bias, x)


class FusedGroup(nn.Module):
    """Adapted linears that share their input, as one (diffusers' `to_qkv` / `to_added_qkv`).

    The base weights are concatenated once and each original layer's weight becomes a view of its
    rows, so the group costs no memory and the modules still read as before. (Moving or casting
    the transformer while the group is installed would part the views from the group's tensor:
    the engine never does that inside `fused_adapters`.)"""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self._layers = tuple(layers)  # not registered: the parameters stay where peft put them
        bases = [layer.base_layer for layer in layers]
        weight = torch.cat([base.weight.detach() for base in bases])
        bias = None if bases[0].bias is None else torch.cat([base.bias.detach() for base in bases])
        row = 0
        for base in bases:
            rows = base.weight.shape[0]
            base.weight = nn.Parameter(weight[row : row + rows], requires_grad=False)
            if bias is not None:
                base.bias = nn.Parameter(bias[row : row + rows], requires_grad=False)
            row += rows
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self._layers
        if all(_plain(layer) and _same_dtype_as_peft(layer, x) for layer in layers):
            return _fused_forward(list(layers), self.weight, self.bias, x)
        return torch.cat([layer(x) for layer in layers], dim=-1)  # peft's way, layer by layer


def _groupable(layers: list[nn.Module]) -> bool:
    """Peft LoRA linears in the plain state over frozen bases of one input size, output size (diffusers
    splits the fused output in equal parts), dtype and device, with one rank and scale."""
    peft_linear = _peft_linear_class()
    if not all(isinstance(layer, peft_linear) and _plain(layer) for layer in layers):
        return False
    bases = [layer.base_layer for layer in layers]
    first = bases[0]
    return (
        all(
            base.in_features == first.in_features
            and base.out_features == first.out_features
            and base.weight.dtype == first.weight.dtype
            and base.weight.device == first.weight.device
            and not base.weight.requires_grad
            and (base.bias is None) == (first.bias is None)
            for base in bases
        )
        and len({layer.scaling[ADAPTER] for layer in layers}) == 1
        and len({layer.r[ADAPTER] for layer in layers}) == 1
    )


def _attention_groups(transformer: nn.Module) -> list[tuple[nn.Module, dict[str, list[nn.Module]]]]:
    """Each FLUX attention whose projections can run fused: (attention, {attribute: layers})."""
    found = []
    for block in [*transformer.transformer_blocks, *transformer.single_transformer_blocks]:
        attn = block.attn
        if type(attn.processor).__name__ != "FluxAttnProcessor" or attn.fused_projections:
            continue
        groups = {"to_qkv": [attn.to_q, attn.to_k, attn.to_v]}
        if attn.added_kv_proj_dim is not None:
            groups["to_added_qkv"] = [attn.add_q_proj, attn.add_k_proj, attn.add_v_proj]
        if all(_groupable(layers) for layers in groups.values()):
            found.append((attn, groups))
    return found


@contextmanager
def fused_adapters(transformer: nn.Module) -> Iterator[int]:
    """Run the adapted layers fused (see the module docstring) inside the block; yields how many
    adapted layers can take the fused path (a layer in another state at call time still runs
    peft's forward). Everything is put back on exit, also when setting up fails halfway (the base
    weights stay views of their group's tensor, which changes nothing for their users)."""
    peft_linear = _peft_linear_class()
    fused_class: dict[type, type] = {}
    swapped: list[tuple[nn.Module, type]] = []
    installed: list[tuple[nn.Module, list[str]]] = []
    try:
        for module in transformer.modules():
            if isinstance(module, peft_linear) and type(module.base_layer) is nn.Linear:
                cls = type(module)
                if cls not in fused_class:
                    fused_class[cls] = type(f"Fused{cls.__name__}", (_FusedLinear, cls), {})
                module.__class__ = fused_class[cls]
                swapped.append((module, cls))
        for attn, groups in _attention_groups(transformer):
            installed.append((attn, []))
            for name, layers in groups.items():
                setattr(attn, name, FusedGroup(layers))
                installed[-1][1].append(name)
            attn.fused_projections = True
        if any(p.is_cuda for p in transformer.parameters()):
            torch.cuda.empty_cache()  # the separate q/k/v weights' blocks, freed by the grouping
        yield sum(1 for module, _ in swapped if _plain(module))
    finally:
        for attn, names in installed:
            for name in names:
                delattr(attn, name)
            attn.fused_projections = False
        for module, cls in swapped:
            module.__class__ = cls
