"""LoRA training speed of the real FLUX.1-dev transformer architecture (random bf16 weights) on a GPU.

    python bench/gpu_train_speed.py                                  # flux-dev, 512 and 1024 px, fast and low
    python bench/gpu_train_speed.py --resolutions 1024 --modes low --nf4
    python bench/gpu_train_speed.py --arch small --device cpu --resolutions 64 --steps 3 --warmup 1   # CPU check

What runs: FLUX.1-dev's transformer built from its config (19 double + 38 single blocks, 24 heads
x 128, joint_attention_dim 4096, pooled 768, in_channels 64, guidance embedding), ~12B parameters,
with random weights: no text encoders or VAE, and nothing downloaded. Inputs have the shapes real
training feeds: packed latents of (res/16)^2 tokens of 64 channels, `--max-seq` T5 states of width
4096 (512 by default, FLUX.1-dev's inference length), a CLIP pooled vector of 768. A rank-16 LoRA
on the engine's full target set is added by the engine's own `add_lora`, and every step is the
engine's own `optimizer_step` (flow-matching loss, backward, clipping, optimizer, schedule).

Modes, as the engine's memory modes: `fast` = bf16, no gradient checkpointing; `low` = gradient
checkpointing, and with `--nf4` (bitsandbytes, CUDA) the blocks' linear layers in 4-bit NF4. The
optimizer is the engine's `auto` choice (8-bit AdamW with bitsandbytes on CUDA, else AdamW).

Printed per (resolution, mode): s/step (mean of `--steps` after `--warmup`, CUDA-synchronised),
peak VRAM (torch.cuda.max_memory_allocated over the timed steps, weights included), and achieved
TFLOP/s = model FLOPs per step / s/step. Model FLOPs are counted once per shape with
torch.utils.flop_counter.FlopCounterMode over a full forward + backward without checkpointing
(matmuls and attention; elementwise ops are not counted), so checkpointing's recomputation does
not count as useful work. For reference, a dense transformer does ~2 FLOPs per weight per token
forward and ~2 more backward for the input gradients (the frozen weights need no weight
gradients): ~4 x 11.9e9 x tokens, plus attention.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.engine.batches import Batch, noised  # noqa: E402
from trainer.engine.config import TrainConfig  # noqa: E402
from trainer.engine.flow import image_ids, sample_sigmas  # noqa: E402
from trainer.engine.hooks import TrainHooks  # noqa: E402
from trainer.engine.lora import add_lora  # noqa: E402
from trainer.engine.training import Update, make_optimizer, make_scheduler, optimizer_step  # noqa: E402

# FLUX.1-dev's transformer config, and a small variant of the same builder for CPU checks.
ARCHS: dict[str, dict[str, object]] = {
    "flux-dev": dict(num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                     joint_attention_dim=4096, pooled_projection_dim=768, axes_dims_rope=(16, 56, 56)),
    "small": dict(num_layers=2, num_single_layers=4, attention_head_dim=64, num_attention_heads=4,
                  joint_attention_dim=128, pooled_projection_dim=128, axes_dims_rope=(8, 28, 28)),
}  # fmt: skip


@dataclass
class Result:
    arch: str
    resolution: int
    mode: str
    s_per_step: float
    peak_vram_gb: float | None  # None on the CPU
    flops_per_step: float
    tflops: float
    optimizer: str
    lora_moved: bool  # the adapter's weights changed: real training happened


def build_transformer(arch: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The architecture with random weights, created directly on `device` in `dtype` (no 48 GB fp32 detour)."""
    from diffusers import FluxTransformer2DModel

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = FluxTransformer2DModel(in_channels=64, guidance_embeds=True, **ARCHS[arch])  # type: ignore[arg-type]
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


def quantize_nf4(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Replace the blocks' linear layers by bitsandbytes 4-bit NF4 ones, one layer at a time."""
    import bitsandbytes as bnb

    for name, module in list(model.named_modules()):
        if not name.startswith(("transformer_blocks.", "single_transformer_blocks.")):
            continue
        for child_name, child in list(module.named_children()):
            if type(child) is not torch.nn.Linear:
                continue
            quantized = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          compute_dtype=dtype, quant_type="nf4", device="meta")  # fmt: skip
            quantized.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4")
            if child.bias is not None:
                quantized.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(module, child_name, quantized.to(child.weight.device))  # .to() quantizes on CUDA
            del child
    torch.cuda.empty_cache()


def make_batches(arch: str, resolution: int, max_seq: int, count: int = 4) -> list[Batch]:
    """Random batches of one image, shaped as training feeds them (on the CPU, moved per step)."""
    config = ARCHS[arch]
    generator = torch.Generator().manual_seed(1)
    side = resolution // 16  # 8x VAE, then 2x2 packing
    batches = []
    for _ in range(count):
        clean = torch.randn(1, side * side, 64, generator=generator)
        sigmas = sample_sigmas(1, "shift", side * side, 0.0, 1.0, generator)
        noisy, target = noised(clean, torch.randn(clean.shape, generator=generator), sigmas)
        text = torch.randn(1, max_seq, int(config["joint_attention_dim"]), generator=generator)  # type: ignore[call-overload]
        pooled = torch.randn(1, int(config["pooled_projection_dim"]), generator=generator)  # type: ignore[call-overload]
        batches.append(Batch(noisy, target, sigmas, text, pooled, image_ids(2 * side, 2 * side), torch.zeros(max_seq, 3)))
    return batches


def count_flops(transformer: torch.nn.Module, batch: Batch, update: Update) -> float:
    """Matmul and attention FLOPs of one forward + backward (no optimizer step, no checkpointing)."""
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.engine.batches import loss_of

    checkpointing = transformer.gradient_checkpointing
    transformer.gradient_checkpointing = False
    with FlopCounterMode(display=False) as counter:
        loss_of(transformer, batch.to(update.device, update.dtype), update.guidance).backward()
    transformer.gradient_checkpointing = checkpointing
    update.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(arch: str, resolution: int, mode: str, *, device: str = "cuda", max_seq: int = 512, steps: int = 10,
        warmup: int = 3, rank: int = 16, nf4: bool = False) -> Result:  # fmt: skip
    """Build, adapt and train; time `steps` optimizer steps after `warmup`."""
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32  # as the engine: bf16 is slow on CPUs
    transformer = build_transformer(arch, dev, dtype)
    if mode == "low" and nf4:
        quantize_nf4(transformer, dtype)
    params = add_lora(transformer, rank, float(rank), "full")
    if mode == "low":
        transformer.enable_gradient_checkpointing()
    transformer.train()
    cfg = TrainConfig(optimizer="auto", learning_rate=1e-4, steps=warmup + steps)
    optimizer = make_optimizer(params, cfg, dev, TrainHooks())
    update = Update(params, optimizer, make_scheduler(optimizer, cfg), 1.0, 1.0, dev, dtype)
    batches = make_batches(arch, resolution, max_seq)
    flops = count_flops(transformer, batches[0], update)
    before = [p.detach().clone() for p in params[:4]]
    for i in range(warmup):
        optimizer_step(transformer, [batches[i % len(batches)]], 1, update)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    started = time.perf_counter()
    for i in range(steps):
        optimizer_step(transformer, [batches[i % len(batches)]], 1, update)
    _sync(dev)
    per_step = (time.perf_counter() - started) / steps
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, params[:4]))
    name = type(optimizer).__name__
    del transformer, optimizer, update, params
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return Result(arch, resolution, mode, per_step, peak, flops, flops / per_step / 1e12, name, moved)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=list(ARCHS), default="flux-dev")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--modes", nargs="+", choices=["fast", "low"], default=["fast", "low"])
    parser.add_argument("--max-seq", type=int, default=512, help="T5 tokens per caption (512: FLUX.1-dev inference length)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--nf4", action="store_true", help="low mode: 4-bit NF4 blocks (needs bitsandbytes and CUDA)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU here; try --arch small --device cpu", file=sys.stderr)
        return 2
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(args.device)}", flush=True)
    for resolution in args.resolutions:
        for mode in args.modes:
            r = run(args.arch, resolution, mode, device=args.device, max_seq=args.max_seq, steps=args.steps,
                    warmup=args.warmup, rank=args.rank, nf4=args.nf4)  # fmt: skip
            vram = f"{r.peak_vram_gb:.2f}" if r.peak_vram_gb is not None else "n/a"
            print(f"arch={r.arch} res={r.resolution} mode={r.mode}{' nf4' if args.nf4 and mode == 'low' else ''} "
                  f"s/step={r.s_per_step:.4f} peak_vram_gb={vram} tflops={r.tflops:.3f} "
                  f"flops/step={r.flops_per_step:.3e} optimizer={r.optimizer} max_seq={args.max_seq}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
