"""How the training forward and backward run on each device.

On CUDA the base is bf16 while the adapter's weights stay fp32, so its updates are not rounded
away. Left alone, peft up-casts every adapted layer's input to fp32 and runs the LoRA matmuls in
fp32: on FLUX.1-dev that is 418 layers, and measured on an H100 it made a 1024² step 35% slower
than bf16 adapter weights (0.75 against 0.56 s; 0.32 against 0.29 s at 512²). Under
`training_precision` the LoRA matmuls run in bf16 instead (autocast, with peft's up-cast switched
off), while the weights, their gradients and the optimizer state stay fp32: the usual
mixed-precision arrangement, as accelerate's bf16 mode and kohya's scripts train. This path's own
GPU speed has not been measured yet (the device time ran out); `bench/gpu_suite.sh` compares it
with the up-cast path (`--precision upcast`) and with bf16 adapter weights.

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
            # cache_enabled=False: this context spans the whole loop, and autocast's weight cache
            # lives until its outermost exit, so with it every forward would reuse the bf16 copies
            # of the adapter made at the first step and never see an update. Each adapter weight
            # is cast once per forward anyway, so the cache saved nothing.
            stack.enter_context(torch.autocast(device.type, dtype=dtype, cache_enabled=False))
        yield
