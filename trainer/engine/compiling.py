"""Optional `torch.compile` of the transformer's repeated blocks (`TrainConfig.compile`).

FLUX is two block kinds repeated (19 double and 38 single blocks in FLUX.1), so compiling each
kind once ("regional" compilation, diffusers' `compile_repeated_blocks`) costs two compilations,
not one per block. Inductor fuses the elementwise work around the matmuls (modulation, RMSNorm,
RoPE, GELU, LoRA's scale-and-add) in the forward and the backward; measured on the bench base on
a 2-core CPU that made a steady step about 15% faster (bench/README-train.md). The price is a
one-off compile when training starts, per image size: about 75 s on that CPU with a cold cache,
10-14 s once Inductor's on-disk cache holds the kernels (same machine, same shapes). So it pays
off on long runs and on workers that train the same sizes again, not on a 100-step CPU demo.
On an H200 (FLUX.1-dev, 512²) it took a step from 0.316 to 0.202 s, and with `cuda_graphs`
to 0.107 s: there eager steps wait on Python launching tens of thousands of short kernels, and
graphs replay each block's kernels with one launch (figures in bench/README-train.md).

Shapes are compiled statically (`dynamic=False`): one set of kernels per (batch, image tokens)
shape, whatever order the buckets come in, so a resumed run computes what the uninterrupted one
did. torch stops compiling a region after its recompile limit (8 shapes) and runs further
shapes eagerly; each run starts with that count at zero. Validation and samples always run eagerly (`eager()`), so their numbers do not
depend on the setting and never add compilations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch


def use_cuda_graphs(cuda_graphs: bool, device: torch.device, grad_accum: int, checkpointing: bool) -> tuple[bool, str]:
    """Whether the compiled blocks run as CUDA graphs, and if asked for but not, why not.

    A graph's outputs live in memory the next replay overwrites. One micro-batch per step is safe:
    its gradients are used by the optimizer before the next forward. Accumulation would keep the
    first micro-batch's gradients in that memory, and checkpointing re-runs blocks inside the
    backward, so both keep plain compiled kernels."""
    if not cuda_graphs:
        return False, ""
    if device.type != "cuda":
        return False, f"cuda_graphs: no CUDA graphs on {device.type}; the blocks run compiled without them"
    if grad_accum > 1 or checkpointing:
        return False, ("cuda_graphs: left off, as they need grad_accum 1 and no gradient checkpointing; "
                       "the blocks run compiled without them")  # fmt: skip
    return True, ""


def compile_blocks(transformer: torch.nn.Module, log: Callable[[str], None], *, cuda_graphs: bool = False) -> None:
    """Compile the double and the single block kind, in place (the adapter must already be added).

    `cuda_graphs` (CUDA only; see `use_cuda_graphs`): Inductor's "reduce-overhead" mode, each
    block's forward and backward recorded once per shape and replayed; the loop must then call
    `new_step()` before each forward."""
    log("compiling the transformer blocks (torch.compile" + (", CUDA graphs" if cuda_graphs else "")
        + "): the first steps of each image size wait for it")  # fmt: skip
    # A worker trains job after job in one process: start each run with torch's compiled-code
    # caches empty, so earlier jobs' sizes do not use up this one's recompile limit. The kernels
    # themselves come back from Inductor's on-disk cache.
    torch.compiler.reset()
    if cuda_graphs:
        transformer.compile_repeated_blocks(dynamic=False, mode="reduce-overhead")
    else:
        transformer.compile_repeated_blocks(dynamic=False)


def new_step() -> None:
    """Tell CUDA graphs a new forward begins: the previous step's graph outputs may be overwritten."""
    torch.compiler.cudagraph_mark_step_begin()


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run compiled modules as plain PyTorch inside this block (no compilation, no guards)."""
    with torch.compiler.set_stance("force_eager"):
        yield
