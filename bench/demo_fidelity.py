"""Fidelity of the shipped `demo` base and of a concept LoRA trained on it (CPU, a few minutes).

    python bench/demo_fidelity.py [--seeds 4] [--steps 80] [--docs docs/demo]

Prints the base's prompt colour accuracy (per prompt) and layout (position, shape), then trains
the checkerboard LoRA through the engine's `train()` and prints its concept score on trigger
prompts before/after, and how much non-trigger prompts change. Metrics:
trainer/engine/demo/fidelity.py and layout.py. With --docs it also writes the sample grids used
in the README.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def grid(rows: list[list["object"]], scale: int = 2) -> "object":
    """Images (all 64 px) in a grid, upscaled `scale` times with nearest neighbour, 4 px gaps."""
    from PIL import Image

    side, gap = 64 * scale, 4
    width = len(rows[0]) * (side + gap) - gap
    sheet = Image.new("RGB", (width, len(rows) * (side + gap) - gap), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            sheet.paste(image.resize((side, side), Image.NEAREST), (c * (side + gap), r * (side + gap)))
    return sheet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100, help="LoRA training steps")
    parser.add_argument("--docs", type=Path, help="write sample grids (PNG) to this folder")
    args = parser.parse_args()

    import torch

    from trainer.engine.demo.fidelity import (
        BASE_PROMPTS, OTHER_PROMPTS, TRIGGER_PROMPTS, base_accuracy, lora_fidelity, render, train_concept_lora,
    )  # fmt: skip
    from trainer.engine.demo.layout import layout_scores
    from trainer.engine.models import load_pipeline

    torch.set_num_threads(2)
    seeds = list(range(args.seeds))
    pipeline = load_pipeline("demo", "cpu")
    pipeline.set_progress_bar_config(disable=True)

    started = time.perf_counter()
    base = base_accuracy(pipeline, seeds)
    print(f"base prompt colour accuracy over {len(seeds)} seeds: {base.accuracy:.3f} (chance 0.125)")
    for prompt, score in base.per_prompt.items():
        print(f"  {score:.3f}  {prompt}")
    print(f"  ({time.perf_counter() - started:.1f}s)")
    started = time.perf_counter()
    layout = layout_scores(pipeline, seeds)
    print(f"base layout over {len(seeds)} seeds: position accuracy {layout.position_accuracy:.3f} (chance 0.5), "
          f"shape IoU {layout.shape_iou:.3f}, shape accuracy {layout.shape_accuracy:.3f} (chance 0.333)")
    for prompt, (shape_iou, right) in layout.per_prompt.items():
        print(f"  IoU {shape_iou:.3f} shape {right:.2f}  {prompt}")
    print(f"  ({time.perf_counter() - started:.1f}s)")

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        lora = train_concept_lora(folder, steps=args.steps)
        print(f"concept LoRA: {args.steps} steps in {time.perf_counter() - started:.1f}s")
        s = lora_fidelity(pipeline, lora, seeds)
        print(f"trigger prompts: concept score {s.trigger_before:.3f} -> {s.trigger_after:.3f} "
              f"(+{s.trigger_after - s.trigger_before:.3f}); mean |pixel change| {s.trigger_change:.1f}/255")
        print(f"other prompts:   concept score {s.other_before:.3f} -> {s.other_after:.3f}; "
              f"mean |pixel change| {s.other_change:.1f}/255; colour accuracy {s.other_accuracy_before:.3f} -> "
              f"{s.other_accuracy_after:.3f}")  # fmt: skip
        if args.docs:
            args.docs.mkdir(parents=True, exist_ok=True)
            rows = [render(pipeline, f"a {c} {sh} on a {b} background", seeds[:4]) for c, sh, b in BASE_PROMPTS]
            grid(rows).save(args.docs / "base.png")
            rows = [render(pipeline, p, seeds[:2]) + render(pipeline, p, seeds[:2], str(lora)) for p in TRIGGER_PROMPTS]
            grid(rows).save(args.docs / "lora_trigger.png")
            rows = [render(pipeline, p, seeds[:2]) + render(pipeline, p, seeds[:2], str(lora)) for p in OTHER_PROMPTS]
            grid(rows).save(args.docs / "lora_other.png")
            print(f"wrote {args.docs}/base.png, lora_trigger.png, lora_other.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
