"""How the training forward and backward run on each device.

On CUDA the base is bf16 while the adapter's weights stay fp32, so its updates are not rounded
away. Left alone, peft up-casts every adapted layer's input to fp32 and runs the LoRA matmuls in
fp32: on FLUX.1-dev that is 418 layers, and measured on an H100 it made a 1024² step 35% slower
than bf16 adapter weights (0.75 against 0.56 s; 0.32 against 0.29 s at 512²). Under
`training_precision` each adapter matmul runs in its input's dtype (bf16) on a bf16 copy of its
fp32 weight, made in the forward so autograd hands the gradient back to the fp32 weight; the
weights, their gradients and the optimizer state stay fp32, the usual mixed-precision
arrangement. Only the adapter changes: the base runs exactly as in bf16 inference.

Autocast would do the same for the adapter but also moves the base's LayerNorms and what follows
them (modulation, residual adds) to fp32. Measured on an H200 with FLUX.1-dev at 1024² that cost
time and memory: fast mode 0.546 s/step and 52 GiB with it, 0.498 s and 47 GiB without; low
memory mode 10.3 GiB with it, 8.3 without (bench/README-train.md has the figures). Its weight cache is a trap too: it
lives until the outermost autocast exits, so a context around the whole loop would reuse the
first step's bf16 copies of the adapter forever.

cuDNN's fused attention is also left out on CUDA. With torch 2.11 (cu130) on an H100, training
the FLUX transformer with it gave NaN losses from the first step (tiny base) and an illegal memory
access in the backward (FLUX.1-dev shapes); the flash and memory-efficient kernels were fine.

On the CPU everything is fp32 and nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch


@contextmanager
def training_precision(
    transformer: torch.nn.Module, device: torch.device, dtype: torch.dtype, *, mixed: bool = True
) -> Iterator[None]:
    """Wrap the training loop (forward, backward, validation, samples) in the device's settings.

    `mixed=False` keeps peft's fp32 up-cast (for comparisons; the engine always trains mixed)."""
    with ExitStack() as stack:
        if device.type == "cuda":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            # global flags, so the backward (run on autograd's own thread) sees them too
            backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
            stack.enter_context(sdpa_kernel(backends))
        if mixed and dtype != torch.float32:
            from peft.helpers import disable_input_dtype_casting

            stack.enter_context(disable_input_dtype_casting(transformer))
            stack.enter_context(_adapter_matmuls_in_input_dtype(transformer))
        yield


class _InputDtypeLinear(torch.nn.Linear):
    """An adapter matrix that multiplies in its input's dtype: fp32 weight, bf16 matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return torch.nn.functional.linear(x, self.weight.to(x.dtype), bias)


@contextmanager
def _adapter_matmuls_in_input_dtype(transformer: torch.nn.Module) -> Iterator[None]:
    """Make every LoRA A and B matrix an `_InputDtypeLinear` for the duration (same weights, same
    state dict keys; only the forward differs)."""
    from peft.tuners.lora import LoraLayer

    swapped = [
        matrix
        for layer in transformer.modules()
        if isinstance(layer, LoraLayer)
        for matrices in (layer.lora_A, layer.lora_B)
        for matrix in matrices.values()
        if type(matrix) is torch.nn.Linear
    ]
    for matrix in swapped:
        matrix.__class__ = _InputDtypeLinear
    try:
        yield
    finally:
        for matrix in swapped:
            matrix.__class__ = torch.nn.Linear
