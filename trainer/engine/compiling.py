"""Optional `torch.compile` of the transformer's repeated blocks (`TrainConfig.compile`).

FLUX is two block kinds repeated (19 double and 38 single blocks in FLUX.1), so compiling each
kind once ("regional" compilation, diffusers' `compile_repeated_blocks`) costs two compilations,
not one per block. Inductor fuses the elementwise work around the matmuls (modulation, RMSNorm,
RoPE, GELU, LoRA's scale-and-add) in the forward and the backward; measured on the bench base on
a 2-core CPU that made a steady step about 15% faster (bench/README-train.md). The price is a
one-off compile when training starts, per image size: about 75 s on that CPU with a cold cache,
10-14 s once Inductor's on-disk cache holds the kernels (same machine, same shapes). So it pays
off on long runs and on workers that train the same sizes again, not on a 100-step CPU demo.

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


def compile_blocks(transformer: torch.nn.Module, log: Callable[[str], None]) -> None:
    """Compile the double and the single block kind, in place (the adapter must already be added)."""
    log("compiling the transformer blocks (torch.compile): the first steps of each image size wait for it")
    # A worker trains job after job in one process: start each run with torch's compiled-code
    # caches empty, so earlier jobs' sizes do not use up this one's recompile limit. The kernels
    # themselves come back from Inductor's on-disk cache.
    torch.compiler.reset()
    transformer.compile_repeated_blocks(dynamic=False)


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run compiled modules as plain PyTorch inside this block (no compilation, no guards)."""
    with torch.compiler.set_stance("force_eager"):
        yield
