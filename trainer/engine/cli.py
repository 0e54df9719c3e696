"""Command line: `python -m trainer.engine train|generate|export-base ...`.

Flags override a `--config file.yaml`; only flags actually given are passed on, so the config
dataclass (not argparse) owns every default.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from .config import _read_yaml, resolution_sides, resolution_value
from .errors import EngineError

# flag dest -> TrainConfig field
TRAIN_FLAGS = {
    "base": "base", "images": "images_dir", "trigger": "trigger_word", "steps": "steps", "out": "output_dir",
    "resolution": "resolution", "rank": "lora_rank", "alpha": "lora_alpha", "lr": "learning_rate",
    "batch_size": "batch_size", "grad_accum": "grad_accum", "seed": "seed", "device": "device",
    "memory_mode": "memory_mode", "sample_prompts": "sample_prompts", "sample_every": "sample_every",
    "checkpoint_every": "checkpoint_every", "val_every": "val_every", "init_lora": "init_lora",
    "caption_dropout": "caption_dropout", "optimizer": "optimizer", "timestep_sampling": "timestep_sampling",
    "ema_decay": "ema_decay",
}  # fmt: skip


def _train_parser(commands: Any) -> None:
    p = commands.add_parser("train", help="train a LoRA; writes OUT/lora.safetensors and more")
    p.add_argument("--config", type=Path, help="YAML with TrainConfig keys; flags override it")
    p.add_argument("--base", help="preset (flux-dev, flux-schnell, demo, tiny), hub id or local folder")
    p.add_argument("--images", help="folder of images with optional same-name .txt captions")
    p.add_argument("--trigger", help="trigger word every caption must contain")
    p.add_argument("--out", help="output folder")
    p.add_argument("--resolution", type=_resolution_arg, metavar="PX[,PX...]",
                   help="bucket side length, or several (512,768,1024) to train every image at each")
    for flag, kind in (("--steps", int), ("--rank", int), ("--alpha", float), ("--lr", float),
                       ("--batch-size", int), ("--grad-accum", int), ("--seed", int), ("--sample-every", int),
                       ("--checkpoint-every", int), ("--val-every", int), ("--caption-dropout", float),
                       ("--ema-decay", float)):  # fmt: skip
        p.add_argument(flag, type=kind)
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--memory-mode", choices=["fast", "low"])
    p.add_argument("--optimizer", choices=["auto", "adamw", "adamw8bit", "adafactor"])
    p.add_argument("--timestep-sampling", choices=["shift", "logit_normal", "sigmoid", "uniform"])
    p.add_argument("--sample-prompt", dest="sample_prompts", action="append",
                   help="repeat for several; default: 'a photo of TRIGGER' (sample_prompts: [] in --config for none)")
    p.add_argument("--init-lora", help="continue training from this lora.safetensors")
    p.add_argument("--add-trigger", action="store_true", help="prepend the trigger to captions lacking it")
    p.add_argument("--flip", action="store_true", help="random horizontal flips")
    p.add_argument("--pad-captions", action="store_true",
                   help="pad captions to the full T5 length, as inference does (slower steps)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer blocks: faster steps after a one-off compile (long runs)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="with --compile on CUDA: replay the compiled blocks as CUDA graphs (small images, fast GPUs)")
    p.add_argument("--fp8", action="store_true",
                   help="fast mode on FP8 GPUs (L4, L40, RTX 40, H100, H200): the frozen base's matmuls in FP8")


def _resolution_arg(text: str) -> int | list[int]:
    """'512' -> 512; '512,768,1024' -> [512, 768, 1024]; TrainConfig checks the values."""
    try:
        sides = resolution_sides(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole pixels, e.g. 512 or 512,768,1024") from None
    return resolution_value(sides)


def _generate_parser(commands: Any) -> None:
    p = commands.add_parser("generate", help="make images with a base and LoRAs")
    p.add_argument("--base", default="flux-dev")
    p.add_argument("--prompt", required=True)
    p.add_argument("--lora", action="append", default=[], help="PATH or PATH:SCALE (a file or training folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--num-images", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, required=True, help="image path; several images get -0, -1... suffixes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.engine", description="FLUX.1 LoRA training engine")
    commands = parser.add_subparsers(dest="command", required=True)
    _train_parser(commands)
    _generate_parser(commands)
    export = commands.add_parser("export-base", help="save the tiny base as a diffusers folder")
    export.add_argument("folder", type=Path)
    demo = commands.add_parser("pretrain-demo", help="pretrain the demo base from scratch (seeded; ~20 min on 2 CPU cores)")
    demo.add_argument("--out", type=Path, help="output folder (default: the shipped demo weights folder)")
    demo.add_argument("--steps", type=int, help="transformer steps")
    demo.add_argument("--vae-steps", type=int)
    demo.add_argument("--seed", type=int)
    demo.add_argument("--images", type=int, help="procedural scenes to draw (default 6144)")
    demo.add_argument("--batch", type=int, help="transformer batch size (default 32)")
    demo.add_argument("--threads", type=int, help="torch CPU threads (default 2; results depend on it)")
    demo.add_argument("--smoke", action="store_true",
                      help="seconds-long run at tiny scale (16 scenes, 2 VAE + 3 transformer steps) to check it works")
    return parser.parse_args(argv)


def run_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .hooks import PrintHooks
    from .training import train

    values: dict[str, Any] = _read_yaml(args.config) if args.config else {}
    values.update({field: getattr(args, flag) for flag, field in TRAIN_FLAGS.items() if getattr(args, flag) is not None})
    for flag, field in (("add_trigger", "add_trigger_to_captions"), ("flip", "flip"), ("resume", "resume"),
                        ("compile", "compile"), ("cuda_graphs", "cuda_graphs"), ("fp8", "fp8"),
                        ("pad_captions", "pad_captions")):
        if getattr(args, flag):
            values[field] = True
    hooks = PrintHooks()
    previous = signal.signal(signal.SIGINT, hooks.interrupt)
    try:
        result = train(TrainConfig.from_dict(values), hooks)
    finally:
        signal.signal(signal.SIGINT, previous)
    print(f"{'canceled' if result.canceled else 'done'} at step {result.final_step}: {result.lora_path}")
    return 0


def _lora_arg(text: str) -> tuple[str, float]:
    path, _, scale = text.rpartition(":")
    if path and scale.replace(".", "", 1).lstrip("-").isdigit():
        return path, float(scale)
    return text, 1.0


def run_generate(args: argparse.Namespace) -> int:
    from .generation import GenerateConfig, generate

    config = GenerateConfig(
        base=args.base, prompt=args.prompt, loras=[_lora_arg(x) for x in args.lora], seed=args.seed, steps=args.steps,
        guidance=args.guidance, width=args.width, height=args.height, num_images=args.num_images, device=args.device,
    )  # fmt: skip
    images = generate(config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        path = args.out if len(images) == 1 else args.out.with_name(f"{args.out.stem}-{i}{args.out.suffix}")
        image.save(path)
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "train":
            return run_train(args)
        if args.command == "generate":
            return run_generate(args)
        if args.command == "pretrain-demo":
            from .demo.pretrain import run_pretrain

            return run_pretrain(args)
        from .tiny import save_tiny_pipeline

        print(save_tiny_pipeline(args.folder))
        return 0
    except EngineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
