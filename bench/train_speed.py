"""Seconds per training step and peak memory of the engine on a small FLUX-architecture base.

    python bench/train_speed.py                      # 60 steps, prints s/step=... peak_rss_mb=...
    python bench/train_speed.py --export-base DIR    # also keep the exact base as a diffusers folder
    python bench/train_speed.py --make-data IMGS     # only draw the 8 images and captions
    python bench/train_speed.py --base DIR --data IMGS   # train on an exported base and that folder

The base: 2 double + 4 single blocks, 4 heads x 64, text width 128 (CLIP and T5), 16-channel
VAE, random but seeded weights (`trainer.engine.tiny.SMALL_SPEC`). The run: 8 images at 256x256
with one-line captions, batch 1, LoRA rank 16 on the full target set (attention, feed-forward,
single-block proj_mlp/proj_out), AdamW, fp32 on the CPU. No validation, samples or checkpoints,
so only training steps are timed. Steady state = the mean of steps after the first `--warmup`.
Peak RSS is the whole process's high-water mark (model loading and encoding included).

The folder written by --export-base can be handed to diffusers' train_dreambooth_lora_flux.py
(`--pretrained_model_name_or_path DIR --resolution 256 --rank 16 --cache_latents`) to compare.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.engine import BasePreset, Progress, TrainConfig, TrainHooks, train  # noqa: E402
from trainer.engine.tiny import SMALL_SPEC, save_tiny_pipeline  # noqa: E402

SMALL_PRESET = BasePreset(
    name="small", source="small", resolution=256, max_sequence_length=512, sample_steps=20,
    sample_guidance=3.5, train_guidance=1.0, description="bench base: FLUX architecture at small width",
)  # fmt: skip
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
RGB = [(220, 40, 40), (40, 180, 60), (40, 60, 220), (230, 210, 40), (140, 50, 200), (240, 140, 30), (250, 250, 250), (10, 10, 10)]


class StepTimer(TrainHooks):
    """Wall and CPU time at each progress report; consecutive reports bracket one optimizer step."""

    def __init__(self) -> None:
        self.stamps: list[tuple[float, float]] = []

    def on_progress(self, progress: Progress) -> None:
        self.stamps.append((time.perf_counter(), time.process_time()))


def make_images(folder: Path, count: int, size: int) -> None:
    for i in range(count):
        image = Image.new("RGB", (size, size), RGB[(i + 3) % len(RGB)])
        draw = ImageDraw.Draw(image)
        draw.ellipse((size // 4, size // 4, size * 3 // 4, size * 3 // 4), fill=RGB[i % len(RGB)])
        image.save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(f"a photo of sks, a {COLOURS[i % len(COLOURS)]} circle")


def export_base(folder: Path) -> Path:
    """Build and save the base in a child process, so its memory is not in our peak RSS."""
    subprocess.run([sys.executable, __file__, "--child-export", str(folder)], check=True, stdout=subprocess.DEVNULL)
    return folder


def compare_steps(rank: int, rounds: int = 6, per_round: int = 5) -> None:
    """Interleaved timing of this engine's step and an emulation of the diffusers example's step.

    The emulation is not that script (we cannot download it): it does the work the script does
    per step with --cache_latents: CLIP and T5 on the caption (T5 padded to 512, no mask), then
    the same transformer step with 512 text tokens. Interleaving rounds exposes both to the same
    load on a shared machine; the minimum is the least disturbed figure.
    """
    from trainer.engine.batches import Batch, loss_of
    from trainer.engine.flow import image_ids
    from trainer.engine.lora import add_lora
    from trainer.engine.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(SMALL_SPEC)
    transformer = pipe.transformer
    params = add_lora(transformer, rank, float(rank), "full")
    transformer.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    caption = "a photo of sks, a red circle"
    latents = torch.randn(1, 256, 64)

    def step(text_tokens: int, encode: bool) -> float:
        started = time.perf_counter()
        with torch.no_grad():
            text, pooled, _ = pipe.encode_prompt(caption, None, max_sequence_length=text_tokens)
        if not encode:  # the engine encodes once, before training: only the step is timed
            started = time.perf_counter()
        sigmas = torch.rand(1)
        batch = Batch(latents, latents.clone(), sigmas, text, pooled, image_ids(32, 32), torch.zeros(text.shape[1], 3))
        loss_of(transformer, batch, 1.0).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    engine_tokens = len(pipe.tokenizer_2(caption).input_ids)
    timings: dict[str, list[float]] = {"engine": [], "example": []}
    step(engine_tokens, False), step(512, True)  # warm-up
    for _ in range(rounds):
        timings["engine"] += [step(engine_tokens, False) for _ in range(per_round)]
        timings["example"] += [step(512, True) for _ in range(per_round)]
    for name, values in timings.items():
        values.sort()
        print(f"{name}: min_s/step={values[0]:.4f} median_s/step={values[len(values) // 2]:.4f}")
    ratio_min = min(timings["engine"]) / min(timings["example"])
    print(f"engine/example: {ratio_min:.2f} (minimum) with {engine_tokens} vs 512 T5 tokens, "
          f"loadavg_1m={os.getloadavg()[0]:.2f}")


def main() -> None:
    if sys.argv[1:2] == ["--child-export"]:
        save_tiny_pipeline(Path(sys.argv[2]), SMALL_SPEC, SMALL_PRESET)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the steady-state mean")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--export-base", type=Path, help="write the base trained on here (diffusers folder)")
    parser.add_argument("--base", type=Path, help="train on this exported base instead of building one")
    parser.add_argument("--data", type=Path, help="train on this image folder instead of drawing --images")
    parser.add_argument("--make-data", type=Path, help="only draw the bench images (and captions) into this folder")
    parser.add_argument("--compare", action="store_true", help="also time an emulated diffusers-example step")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing (less memory, slower)")
    parser.add_argument("--compile", action="store_true", help="the engine's `compile` setting (torch.compile the blocks)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare:
        compare_steps(args.rank)
        return
    if args.make_data:
        args.make_data.mkdir(parents=True, exist_ok=True)
        make_images(args.make_data, args.images, args.resolution)
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = args.base or export_base(args.export_base or work / "base")
        images = args.data or work / "images"
        if not args.data:
            images.mkdir()
            make_images(images, args.images, args.resolution)
        config = TrainConfig(
            base=str(base), images_dir=str(images), output_dir=str(work / "out"), trigger_word="sks",
            steps=args.steps, resolution=args.resolution, lora_rank=args.rank, batch_size=1, learning_rate=1e-4,
            caption_dropout=0.0, val_every=0, sample_every=0, checkpoint_every=0, device=args.device,
            optimizer="adamw", gradient_checkpointing=args.checkpointing, sample_prompts=[], compile=args.compile,
        )  # fmt: skip
        timer = StepTimer()
        started = time.perf_counter()
        train(config, timer)
        total = time.perf_counter() - started
    # a short run (e.g. --steps 2 only to --export-base) still reports what it has
    steady = timer.stamps[min(args.warmup, max(0, len(timer.stamps) - 2)) :]
    walls = sorted(b[0] - a[0] for a, b in zip(steady, steady[1:]))
    per_step = (steady[-1][0] - steady[0][0]) / (len(steady) - 1)
    cpu_per_step = (steady[-1][1] - steady[0][1]) / (len(steady) - 1)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"s/step={per_step:.4f} peak_rss_mb={peak_mb:.0f}")
    # The machine may be shared: when the median and the fastest quarter sit far below the mean,
    # other processes took the CPU, and the load average says how busy it was.
    print(f"median_s/step={walls[len(walls) // 2]:.4f} p25_s/step={walls[len(walls) // 4]:.4f} "
          f"cpu_s/step={cpu_per_step:.4f} steps={args.steps} total_s={total:.1f} "
          f"threads={torch.get_num_threads()} loadavg_1m={os.getloadavg()[0]:.2f} "
          f"first_step_done_s={timer.stamps[0][0] - started:.1f}")  # loading, encoding, any compile, step 1
    if args.export_base:
        print(f"base written to {args.export_base}")


if __name__ == "__main__":
    main()
