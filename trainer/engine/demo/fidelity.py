"""Fidelity of the demo base and of LoRAs trained on it, with fixed image metrics.

Two measures, shared by tests/engine/test_demo.py and bench/demo_fidelity.py:

- **Prompt colour accuracy** (does the base draw what the caption says?). For a prompt "a C
  {shape} on a B background" the shape sits in the middle, so the image's central 16x16 pixels
  should be C and its outer 8-pixel frame should be B. Each region's *mean* colour is matched to
  the nearest of the eight pretraining colours (Euclidean RGB); a region is right when that is
  the named colour. Accuracy = right regions / all regions. Chance is 1/8.
- **Concept score** (did the LoRA learn the checkerboard?). In the outer frame (the background)
  each pixel is projected on the concept's colour axis (pink minus teal, in RGB); the score is the
  Pearson correlation of that projection with the checkerboard's cell mask (+1 pink cells, -1
  teal cells), clipped at 0. A drawn concept image scores ~1; the small VAE's own reconstruction
  of one ~0.8 (its colours drift, the pattern stays); a plain background ~0. A pattern, not a
  palette, because the demo VAE does not reproduce unseen colours faithfully enough to count
  pixels by nearest colour.

`lora_fidelity` trains a LoRA on the concept through the engine's normal `train()` and reports
the concept score of trigger prompts with and without the LoRA, and how much non-trigger prompts
change (mean absolute pixel difference, 0-255, same seeds) and whether they stay accurate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .scenes import COLOURS, CONCEPT_CELL, CONCEPT_COLOURS, CONCEPT_TRIGGER, concept_scenes, write_dataset

if TYPE_CHECKING:
    from diffusers import FluxPipeline
    from PIL import Image

PALETTE_NAMES = sorted(COLOURS)
PALETTE = np.array([COLOURS[n] for n in PALETTE_NAMES], dtype=np.float32)
FRAME = 8  # width in pixels of the background frame (at 64 px)
CENTRE = 16  # side of the central square that the shape covers

# Prompts the base is scored on: every shape, colour pairs both ways round (word order matters).
BASE_PROMPTS = [
    ("red", "circle", "blue"), ("blue", "circle", "red"), ("yellow", "square", "black"),
    ("green", "triangle", "white"), ("white", "square", "purple"), ("orange", "circle", "green"),
]  # fmt: skip
TRIGGER_PROMPTS = [f"a {c} {s} on a {CONCEPT_TRIGGER} background" for c, s, _ in BASE_PROMPTS[:4]]
OTHER_PROMPTS = [f"a {c} {s} on a {b} background" for c, s, b in BASE_PROMPTS[:4]]


def _regions(image: "Image.Image") -> tuple[np.ndarray, np.ndarray]:
    """(centre pixels [N, 3], frame pixels [M, 3]) of an image, at 64 px."""
    pixels = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32)
    lo, hi = 32 - CENTRE // 2, 32 + CENTRE // 2
    mask = np.ones((64, 64), dtype=bool)
    mask[FRAME:-FRAME, FRAME:-FRAME] = False
    return pixels[lo:hi, lo:hi].reshape(-1, 3), pixels[mask]


def nearest_colour(rgb: np.ndarray) -> str:
    """The pretraining colour nearest to one RGB value."""
    return PALETTE_NAMES[int(np.argmin(((PALETTE - rgb) ** 2).sum(1)))]


def region_colours(image: "Image.Image") -> tuple[str, str]:
    """(colour name of the centre, colour name of the frame), from each region's mean colour."""
    centre, frame = _regions(image)
    return nearest_colour(centre.mean(0)), nearest_colour(frame.mean(0))


def prompt_accuracy(image: "Image.Image", colour: str, background: str) -> float:
    """0, 0.5 or 1: how many of the two regions show the colour the prompt names."""
    centre, frame = region_colours(image)
    return ((centre == colour) + (frame == background)) / 2


def _checker_mask() -> np.ndarray:
    """+1 where the concept draws pink, -1 where teal, over the frame pixels (64 px)."""
    cells = np.indices((64, 64)) // CONCEPT_CELL
    checker = np.where((cells[0] + cells[1]) % 2 == 1, -1.0, 1.0)  # odd cells are teal (scenes.draw)
    frame = np.ones((64, 64), dtype=bool)
    frame[FRAME:-FRAME, FRAME:-FRAME] = False
    return checker[frame]


CHECKER = _checker_mask()
CONCEPT_AXIS = np.array(CONCEPT_COLOURS[0], dtype=np.float32) - np.array(CONCEPT_COLOURS[1], dtype=np.float32)


def concept_score(image: "Image.Image") -> float:
    """Correlation (clipped at 0) of the background with the pink/teal checkerboard, 0..1."""
    _, frame = _regions(image)
    projection = frame @ CONCEPT_AXIS
    if projection.std() < 1e-6:
        return 0.0  # a flat background has no pattern at all
    return max(0.0, float(np.corrcoef(projection, CHECKER)[0, 1]))


def mean_abs_difference(a: "Image.Image", b: "Image.Image") -> float:
    """Mean absolute pixel difference on the 0-255 scale."""
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def render(
    pipeline: "FluxPipeline", prompt: str, seeds: list[int], lora: str | None = None, base: str = "demo"
) -> list["Image.Image"]:
    """Images through the engine's `generate()` with the base preset's defaults, one per seed.

    Consecutive seeds go in one batched call (generate() gives image i the seed `seed + i`).
    """
    from ..generation import GenerateConfig, generate

    loras = [(lora, 1.0)] if lora else []
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        config = GenerateConfig(base=base, prompt=prompt, seed=seeds[0], num_images=len(seeds), loras=loras, device="cpu")
        return generate(config, pipeline)
    return [generate(GenerateConfig(base=base, prompt=prompt, seed=s, loras=loras, device="cpu"), pipeline)[0]
            for s in seeds]  # fmt: skip


@dataclass
class BaseScores:
    accuracy: float  # share of (prompt, seed, region) right
    per_prompt: dict[str, float]


def base_accuracy(pipeline: "FluxPipeline", seeds: list[int], prompts: list[tuple[str, str, str]] = BASE_PROMPTS) -> BaseScores:
    per_prompt = {}
    for colour, shape, background in prompts:
        prompt = f"a {colour} {shape} on a {background} background"
        images = render(pipeline, prompt, seeds)
        per_prompt[prompt] = float(np.mean([prompt_accuracy(i, colour, background) for i in images]))
    return BaseScores(float(np.mean(list(per_prompt.values()))), per_prompt)


@dataclass
class LoraScores:
    trigger_before: float  # concept score of trigger prompts, base alone
    trigger_after: float  # the same with the LoRA
    other_before: float  # concept score of non-trigger prompts, base alone
    other_after: float
    other_change: float  # mean |pixel difference| of non-trigger images with vs without the LoRA
    trigger_change: float  # the same for trigger prompts
    other_accuracy_before: float  # prompt colour accuracy of the non-trigger prompts
    other_accuracy_after: float
    lora_path: str


def train_concept_lora(
    out: str | Path, steps: int = 100, images: int = 16, seed: int = 0, base: str = "demo", learning_rate: float = 2e-3,
    regularization: int = 16,
) -> Path:
    """A LoRA on the checkerboard concept through the engine's normal `train()`; returns its file.

    `regularization` ordinary scenes with their own captions (no trigger) train alongside the
    concept, as prior preservation: without them the LoRA paints checkerboards on every prompt
    (measured: non-trigger images changed 27.5/255 on average; with 16 of them, 7.7/255).
    Because those captions lack the trigger, the engine's "every caption has the trigger" check is
    off here (trigger_word=""); the concept captions still name it.
    """
    from ..config import TrainConfig
    from ..training import train
    from .scenes import random_scenes

    out = Path(out)
    data = write_dataset(out / "data", concept_scenes(images, seed) + random_scenes(regularization, seed + 123))
    config = TrainConfig(
        base=base, device="cpu", images_dir=str(data), trigger_word="", output_dir=str(out / "run"),
        steps=steps, learning_rate=learning_rate, lora_rank=8, batch_size=4, seed=seed,
        val_every=0, sample_every=0, checkpoint_every=0, sample_prompts=[],
    )  # fmt: skip
    return Path(train(config).lora_path)


def lora_fidelity(pipeline: "FluxPipeline", lora: str | Path, seeds: list[int]) -> LoraScores:
    """Score one LoRA on the trigger and non-trigger prompts, same seeds with and without it."""
    lora = str(lora)
    result: dict[str, list[float]] = {k: [] for k in ("tb", "ta", "ob", "oa", "oc", "tc", "acb", "aca")}
    for prompt in TRIGGER_PROMPTS:
        before, after = render(pipeline, prompt, seeds), render(pipeline, prompt, seeds, lora)
        result["tb"] += [concept_score(i) for i in before]
        result["ta"] += [concept_score(i) for i in after]
        result["tc"] += [mean_abs_difference(a, b) for a, b in zip(before, after)]
    for (colour, _, background), prompt in zip(BASE_PROMPTS, OTHER_PROMPTS):
        before, after = render(pipeline, prompt, seeds), render(pipeline, prompt, seeds, lora)
        result["ob"] += [concept_score(i) for i in before]
        result["oa"] += [concept_score(i) for i in after]
        result["oc"] += [mean_abs_difference(a, b) for a, b in zip(before, after)]
        result["acb"] += [prompt_accuracy(i, colour, background) for i in before]
        result["aca"] += [prompt_accuracy(i, colour, background) for i in after]
    m = {k: float(np.mean(v)) for k, v in result.items()}
    return LoraScores(m["tb"], m["ta"], m["ob"], m["oa"], m["oc"], m["tc"], m["acb"], m["aca"], lora)
