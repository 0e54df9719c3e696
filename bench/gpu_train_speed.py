"""LoRA training speed of the real FLUX.1-dev transformer architecture (random bf16 weights) on a GPU.

    python bench/gpu_train_speed.py                                  # flux-dev, 512 and 1024 px, fast and low
    python bench/gpu_train_speed.py --resolutions 1024 --modes low --no-nf4     # checkpointing, bf16 base
    python bench/gpu_train_speed.py --arch small --device cpu --resolutions 64 --steps 3 --warmup 1   # CPU check

What runs: FLUX.1-dev's transformer built from its config (19 double + 38 single blocks, 24 heads
x 128, joint_attention_dim 4096, pooled 768, in_channels 64, guidance embedding), ~12B parameters,
with random weights: no text encoders or VAE, and nothing downloaded. Inputs have the shapes real
training feeds: packed latents of (res/16)^2 tokens of 64 channels, `--max-seq` T5 states of width
4096 (32 by default: a typical caption, and the engine encodes only a caption's real length;
512 is the padded length diffusers' own training script uses), a CLIP pooled vector of 768. A rank-16 LoRA
on the engine's full target set is added by the engine's own `add_lora`, and every step is the
engine's own `optimizer_step` (flow-matching loss, backward, clipping, optimizer, schedule).

Modes, as the engine's memory modes: `fast` = bf16, no gradient checkpointing; `low` = gradient
checkpointing, and with `--nf4` (bitsandbytes, CUDA) the blocks' linear layers in 4-bit NF4. The
optimizer is the engine's `auto` choice for the mode (fused AdamW in fast mode; 8-bit AdamW in low
mode with bitsandbytes on CUDA; `--optimizer` overrides it). `--compile` and `--cuda-graphs` are
the engine's settings of those names. Steps
run inside the engine's `training_precision` (bf16 LoRA matmuls on fp32 adapter weights, no cuDNN
attention); `--precision upcast` keeps peft's fp32 LoRA matmuls and `--lora-dtype bf16` stores
the adapter in bf16, for comparison.

Printed per (resolution, max_seq, mode): s/step (mean of `--steps` after `--warmup`,
CUDA-synchronised), peak VRAM (torch.cuda.max_memory_allocated over the timed steps, weights
included), and achieved TFLOP/s = useful FLOPs per step / s/step. Useful FLOPs come from the
architecture (`model_flops`: forward, the backward's input gradients, the adapter's gradients;
tests check it against torch's FlopCounterMode within 3%), so checkpointing's recomputation and a
4-bit base's dequantization do not count as work and every mode is divided into the same figure.
`bench/gpu_suite.sh` runs the whole set of issue #3's GPU figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.engine.batches import Batch, noised  # noqa: E402
from trainer.engine.compiling import compile_blocks as compile_blocks_of  # noqa: E402
from trainer.engine.compiling import use_cuda_graphs  # noqa: E402
from trainer.engine.fp8 import use_fp8  # noqa: E402
from trainer.engine.config import TrainConfig  # noqa: E402
from trainer.engine.flow import image_ids, sample_sigmas  # noqa: E402
from trainer.engine.hooks import TrainHooks  # noqa: E402
from trainer.engine.lora import add_lora  # noqa: E402
from trainer.engine.precision import training_precision  # noqa: E402
from trainer.engine.training import Update, eager_kernels, make_optimizer, make_scheduler, optimizer_step  # noqa: E402

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
    max_seq: int
    mode: str  # fast | low, plus "+nf4", "+bf16-lora", "+compile" where those were on
    s_per_step: float  # nan when the step ran out of memory
    peak_vram_gb: float | None  # None on the CPU
    flops_per_step: float
    tflops: float
    optimizer: str
    lora_moved: bool  # the adapter's weights changed: real training happened
    error: str = ""
    # torch.cuda.max_memory_reserved: with CUDA graphs the graphs' private memory is not counted as
    # allocated while they replay, so this (an upper bound: it includes cached blocks) is the figure
    peak_reserved_gb: float | None = None
    loss: float = float("nan")  # the last timed step's: NaN means the numbers are not to be trusted

    def line(self) -> str:
        vram = f"{self.peak_vram_gb:.2f}" if self.peak_vram_gb is not None else "n/a"
        vram += f" reserved_gb={self.peak_reserved_gb:.2f}" if self.peak_reserved_gb is not None else ""
        return (f"arch={self.arch} res={self.resolution} max_seq={self.max_seq} mode={self.mode} "
                f"s/step={self.s_per_step:.4f} peak_vram_gb={vram} tflops={self.tflops:.3g} "
                f"flops/step={self.flops_per_step:.3e} optimizer={self.optimizer} loss={self.loss:.4f}"
                + (f" error={self.error}" if self.error else ""))  # fmt: skip


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
    """Matmul and attention FLOPs of one forward + backward, counted by torch (no checkpointing)."""
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.engine.batches import loss_of

    checkpointing = transformer.gradient_checkpointing
    transformer.gradient_checkpointing = False
    with FlopCounterMode(display=False) as counter:
        loss_of(transformer, batch.to(update.device, update.dtype), update.guidance).backward()
    transformer.gradient_checkpointing = checkpointing
    update.optimizer.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def model_flops(arch: str, resolution: int, max_seq: int, rank: int = 16) -> float:
    """Useful FLOPs of one training step, from the architecture: forward + the backward's input
    gradients (the frozen base needs no weight gradients) + the adapter's weight gradients.

    Every token passes through ~12 h² weights per block: a double block's own stream (q, k, v, out:
    4 h²; feed-forward: 8 h²), or a single block's q, k, v (3 h²), proj_mlp (4 h²) and proj_out
    (5 h²). The adaLN modulations see one vector per image, not one per token, so they are left
    out. Attention costs 4 N² h forward and twice that backward. Checkpointing's recomputation is
    not useful work, and a 4-bit base does the same useful work, so every mode is divided into the
    same figure. `count_flops` checks this against torch's own count (tests/engine/test_gpu_bench.py).
    """
    config = ARCHS[arch]
    h = int(config["num_attention_heads"]) * int(config["attention_head_dim"])  # type: ignore[call-overload]
    blocks = int(config["num_layers"]) + int(config["num_single_layers"])  # type: ignore[call-overload]
    image = (resolution // 16) ** 2
    tokens = image + max_seq
    forward = 2 * 12 * h * h * tokens * blocks + 4 * tokens**2 * h * blocks
    forward += 2 * 2 * image * 64 * h + 2 * max_seq * int(config["joint_attention_dim"]) * h  # type: ignore[call-overload]
    backward = 2 * 12 * h * h * tokens * blocks + 8 * tokens**2 * h * blocks + 2 * image * h * 64
    # LoRA (full targets): per token and block, (in + out) summed over the adapted layers is 18 h
    # in either stream of a double block and 17 h in a single block (18 h is used for both);
    # forward, input gradients and weight gradients cost the same each.
    lora = 2 * rank * 18 * h * tokens * blocks * 3
    return float(forward + backward + lora)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_mode(arch: str, mode: str, shapes: list[tuple[int, int]], *, device: str = "cuda", steps: int = 10,
             warmup: int = 3, rank: int = 16, nf4: bool = False, lora_dtype: str = "fp32",
             compile_blocks: bool = False, cuda_graphs: bool = False, optimizer: str = "auto", precision: str = "mixed",
             autotune: bool = False, attention: str = "engine", fp8: bool = False, fused: bool = True,
             report: Callable[[Result], None] | None = None) -> list[Result]:  # fmt: skip
    """Build and adapt the transformer once, then time `steps` optimizer steps after `warmup` per
    (resolution, max_seq) shape. `lora_dtype` "fp32" is the engine's choice (fp32 adapter weights
    on a bf16 base); "bf16" stores them in bf16. `precision` "mixed" is the engine's loop, "upcast"
    keeps peft's fp32 LoRA matmuls. `compile_blocks` is the engine's `compile` setting
    (torch.compile of each block class, static shapes); compile time is in warmup. `cuda_graphs`
    (with `compile_blocks`) is the engine's `cuda_graphs` setting. `optimizer` is the engine's
    setting, `auto` resolved for `mode` as the engine does. Candidates the engine does not use
    (yet): `autotune` compiles with Inductor's max-autotune (matmul tile search; minutes more
    compile), `attention="cudnn"` lets SDPA prefer cuDNN's attention, which the engine leaves out
    (NaN and an illegal memory access with torch 2.11 on an H100): the result's `loss` shows it.
    `fp8` is the engine's `fp8` setting (the frozen base's block matmuls in FP8; fast mode).
    `fused` (eager only, as in the engine) runs the adapter as fused LoRA matmuls and the attention
    with the one-operation rotary embedding; False keeps peft's layers and diffusers' processor.
    `report` sees each result as soon as it is measured."""
    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32  # as the engine: bf16 is slow on CPUs
    transformer = build_transformer(arch, dev, dtype)
    if mode == "low" and nf4:
        quantize_nf4(transformer, dtype)
    params = add_lora(transformer, rank, float(rank), "full")
    if fp8 and mode == "fast":
        print(f"fp8: {use_fp8(transformer)} base layers", flush=True)
    if lora_dtype == "bf16":
        for param in params:
            param.data = param.data.to(torch.bfloat16)
    if mode == "low":
        transformer.enable_gradient_checkpointing()
    transformer.train()
    graphs, why_not = use_cuda_graphs(compile_blocks and cuda_graphs, dev, 1, mode == "low")
    if why_not:
        print(why_not)
    label = mode + ("+nf4" if mode == "low" and nf4 else "") + ("+bf16-lora" if lora_dtype == "bf16" else "")
    label += ("+compile" if compile_blocks else "") + ("+graphs" if graphs else "") + ("+upcast" if precision == "upcast" else "")
    label += ("+autotune" if autotune and compile_blocks else "") + ("+cudnn" if attention == "cudnn" else "")
    label += "+fp8" if fp8 and mode == "fast" else ""
    label += "+unfused" if not fused and not compile_blocks else ""
    cfg = TrainConfig(optimizer=optimizer, memory_mode=mode, learning_rate=1e-4, steps=10**6)
    optimizer_ = make_optimizer(params, cfg, dev, TrainHooks())
    update = Update(params, optimizer_, make_scheduler(optimizer_, cfg), 1.0, 1.0, dev, dtype, graphs)
    name = type(optimizer_).__name__
    results = []
    for resolution, max_seq in shapes:
        batches = make_batches(arch, resolution, max_seq)
        try:
            flops = model_flops(arch, resolution, max_seq, rank)
            if compile_blocks and not getattr(transformer, "_bench_compiled", False):
                if autotune:  # not an engine setting: measured here first
                    torch.compiler.reset()
                    transformer.compile_repeated_blocks(dynamic=False, mode="max-autotune" if graphs else "max-autotune-no-cudagraphs")
                else:
                    compile_blocks_of(transformer, print, cuda_graphs=graphs)  # the engine's `compile` setting
                transformer._bench_compiled = True
            before = [p.detach().clone() for p in params[:4]]
            with (training_precision(transformer, dev, dtype, mixed=precision == "mixed"), _attention(attention),
                  eager_kernels(transformer, compiled=compile_blocks or not fused or precision == "upcast", log=print)):
                for i in range(warmup):
                    optimizer_step(transformer, [batches[i % len(batches)]], 1, update)
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                _sync(dev)
                started, loss = time.perf_counter(), float("nan")
                for i in range(steps):
                    loss = optimizer_step(transformer, [batches[i % len(batches)]], 1, update)
                _sync(dev)
            per_step = (time.perf_counter() - started) / steps
            peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
            reserved = torch.cuda.max_memory_reserved(dev) / 2**30 if dev.type == "cuda" else None
            moved = any(not torch.equal(b, p.detach()) for b, p in zip(before, params[:4]))
            results.append(Result(arch, resolution, max_seq, label, per_step, peak, flops, flops / per_step / 1e12, name, moved,
                                  peak_reserved_gb=reserved, loss=loss))  # fmt: skip
        except torch.OutOfMemoryError as error:
            optimizer_.zero_grad(set_to_none=True)
            results.append(Result(arch, resolution, max_seq, label, float("nan"), None, 0.0, 0.0, name, False,
                                  "out of memory: " + str(error).split(".")[0]))  # fmt: skip
        if report:
            report(results[-1])
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    del transformer, optimizer_, update, params
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return results


@contextlib.contextmanager
def _attention(choice: str) -> Iterator[None]:
    """`engine`: as training_precision set it; `cudnn`: cuDNN's attention first, then the rest."""
    if choice == "engine":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(order, set_priority=True):
        yield


def run(arch: str, resolution: int, mode: str, *, max_seq: int = 512, **options: object) -> Result:
    """One shape: `run_mode` for a single (resolution, max_seq)."""
    return run_mode(arch, mode, [(resolution, max_seq)], **options)[0]  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=list(ARCHS), default="flux-dev")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--modes", nargs="+", choices=["fast", "low"], default=["fast", "low"])
    parser.add_argument("--max-seq", type=int, nargs="+", default=[32],
                        help="T5 tokens per caption: the engine encodes only a caption's real length (32 is typical); "
                             "512 is the padded length diffusers' script trains with")  # fmt: skip
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--nf4", action=argparse.BooleanOptionalAction, default=None,
                        help="low mode: 4-bit NF4 blocks; default: on where the engine's low mode uses it (CUDA and bitsandbytes)")
    parser.add_argument("--lora-dtype", choices=["fp32", "bf16"], default="fp32", help="fp32: the engine's adapter weights")
    parser.add_argument("--precision", choices=["mixed", "upcast"], default="mixed",
                        help="mixed: the engine's bf16 LoRA matmuls on fp32 weights; upcast: peft's fp32 LoRA matmuls")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block class (compile time is in warmup)")
    parser.add_argument("--cuda-graphs", action="store_true", help="with --compile: the engine's cuda_graphs setting")
    parser.add_argument("--optimizer", choices=["auto", "adamw", "adamw8bit"], default="auto",
                        help="auto: as the engine chooses for the mode (fused AdamW fast, 8-bit AdamW low on CUDA)")
    parser.add_argument("--autotune", action="store_true", help="with --compile: Inductor's max-autotune (not an engine setting)")
    parser.add_argument("--attention", choices=["engine", "cudnn"], default="engine",
                        help="cudnn: prefer cuDNN's attention, which the engine leaves out (not an engine setting)")
    parser.add_argument("--fp8", action="store_true", help="fast mode: the engine's fp8 setting (base matmuls in FP8)")
    parser.add_argument("--unfused", action="store_true",
                        help="eager steps with peft's layers and diffusers' attention (the engine fuses them)")
    parser.add_argument("--json", type=Path, help="append one JSON line per result to this file")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU here; try --arch small --device cpu", file=sys.stderr)
        return 2
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(args.device)}", flush=True)
    if args.nf4 is None:  # as the engine's low memory mode
        from trainer.engine.models import can_quantize

        args.nf4 = can_quantize(torch.device(args.device))
    shapes = [(resolution, seq) for resolution in args.resolutions for seq in args.max_seq]

    def report(result: Result) -> None:
        print(result.line(), flush=True)
        if args.json:
            with args.json.open("a") as out:
                out.write(json.dumps(dataclasses.asdict(result)) + "\n")

    for mode in args.modes:
        run_mode(args.arch, mode, shapes, device=args.device, steps=args.steps, warmup=args.warmup, rank=args.rank,
                 nf4=args.nf4, lora_dtype=args.lora_dtype, compile_blocks=args.compile or args.cuda_graphs,
                 cuda_graphs=args.cuda_graphs, optimizer=args.optimizer, precision=args.precision,
                 autotune=args.autotune, attention=args.attention, fp8=args.fp8, fused=not args.unfused,
                 report=report)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
