"""The optimizer and learning-rate schedule that update the adapter, and the `Update` a step applies.

Separate from the loop in `training.py`: which optimizer a run gets is a choice of its own (the
device, the memory mode, and the optimizer a resumed checkpoint was saved with decide it), checked
without a GPU, and bench/gpu_train_speed.py builds its steps from the same pieces as the loop.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from .config import TrainConfig
from .errors import ConfigError
from .hooks import TrainHooks
from .models import can_quantize


@dataclasses.dataclass
class Update:
    """How one optimizer step updates the adapter (shared with bench/gpu_train_speed.py)."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    guidance: float | None
    max_grad_norm: float
    device: torch.device
    dtype: torch.dtype
    graphs: bool = False  # the blocks replay as CUDA graphs: mark each new forward
    ema: Any = None  # an AdapterEMA to move after each optimizer step (ema_decay), or None


# optimizer class -> the `optimizer` setting that makes it (saved in checkpoints)
OPTIMIZER_NAMES = {"AdamW": "adamw", "AdamW8bit": "adamw8bit", "Adafactor": "adafactor"}
ADAMW8BIT_NEEDS = "optimizer adamw8bit needs a CUDA GPU and the bitsandbytes package; use adamw or adafactor here"


def optimizer_name(cfg: TrainConfig, device: torch.device) -> str:
    """The optimizer a run uses. `auto`: 8-bit AdamW in low memory mode on CUDA with bitsandbytes
    (its state is a quarter of AdamW's), else fused AdamW. In fast mode the adapter's fp32 AdamW
    state is small next to the bf16 base (about 0.45 GB for FLUX.1 at rank 16, against 24 GB),
    and 8-bit AdamW, which updates each of the ~840 adapter tensors with kernels of its own, was
    no faster: 0.568 against 0.546 s a step at 1024² on an H200, equal at 512²."""
    if cfg.optimizer != "auto":
        return cfg.optimizer
    return "adamw8bit" if cfg.memory_mode == "low" and can_quantize(device) else "adamw"


def make_optimizer(
    params: list[torch.nn.Parameter], cfg: TrainConfig, device: torch.device, hooks: TrainHooks, name: str | None = None
) -> torch.optim.Optimizer:
    """AdamW by default; 8-bit AdamW (bitsandbytes, CUDA) halves optimizer memory; Adafactor less still.

    `name` overrides the config's choice (a resumed run keeps the optimizer its state was saved from)."""
    name = name or optimizer_name(cfg, device)
    hooks.on_log(f"optimizer {name}, lr {cfg.learning_rate:g}")
    if name == "adamw8bit":
        if not can_quantize(device):
            raise ConfigError(ADAMW8BIT_NEEDS)
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                         scale_parameter=False, relative_step=False, warmup_init=False)  # fmt: skip
    # The fused kernel updates all LoRA tensors in one pass instead of ~10 small ops per tensor;
    # with hundreds of small adapter matrices that loop is a visible share of a step.
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of each optimizer step: a linear warmup over `warmup_steps`, then constant,
    cosine or linear decay over the rest of the run.

    The warmup's first step already trains: step k (from 0) of W runs at (k + 1) / W of the rate,
    so the W-th is at full rate. (diffusers' and transformers' schedules start at k / W, which spends
    the first step at a rate of 0: it moves nothing, and a warmup of 1 step does nothing at all.)
    After the warmup the schedules are diffusers': the decay starts at the full rate and its last
    step keeps a small rate (linear: 1 / (steps - W) of it)."""
    warmup, steps, shape = cfg.warmup_steps, cfg.steps, cfg.lr_scheduler

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, steps - warmup)
        if shape == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * done))
        if shape == "linear":
            return max(0.0, 1.0 - done)
        return 1.0

    # A plain function, not a callable object: LambdaLR's state_dict (saved in checkpoints) keeps
    # none of it, and a resumed run rebuilds it from the config.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
