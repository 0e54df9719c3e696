"""Does the demo base put the named shape where the prompt says? Two fixed image metrics.

The foreground of a generated image for "a C {shape}[ at the W] on a B background" is every pixel
closer (Euclidean RGB) to colour C than to colour B, at 64 px. Then:

- **Position accuracy**: for prompts with a place ("at the left/right/top/bottom"), the
  foreground's centroid must lie on that side of the image's middle line. Chance: 1/2.
- **Shape IoU and shape accuracy**: the foreground is compared (intersection over union) with the
  masks of the three shapes drawn by `scenes.draw` at the prompt's place and default size; the IoU
  with the named shape is reported, and the image counts as the right shape when that shape's IoU
  is the highest of the three. Chance: 1/3. Drawn scenes score 1.0 on both (their own masks);
  jitter and size vary in pretraining, so a good base scores below 1.

`layout_scores` renders the prompts with the base's preset defaults through `fidelity.render`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .scenes import COLOURS, PLACES, SHAPES, Scene, draw

if TYPE_CHECKING:
    from diffusers import FluxPipeline
    from PIL import Image

# (colour, shape, where, background): every place, every shape, colour pairs the base knows.
LAYOUT_PROMPTS = [
    ("red", "square", "at the left", "blue"), ("yellow", "circle", "at the right", "black"),
    ("white", "triangle", "at the top", "green"), ("orange", "square", "at the bottom", "purple"),
    ("blue", "circle", "", "yellow"), ("green", "triangle", "", "white"), ("purple", "square", "", "orange"),
]  # fmt: skip


def foreground(image: "Image.Image", colour: str, background: str) -> np.ndarray:
    """Boolean 64x64 mask of the pixels nearer to `colour` than to `background`."""
    pixels = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32)
    near = ((pixels - np.array(COLOURS[colour], dtype=np.float32)) ** 2).sum(-1)
    far = ((pixels - np.array(COLOURS[background], dtype=np.float32)) ** 2).sum(-1)
    return near < far


def drawn_mask(colour: str, shape: str, where: str, background: str) -> np.ndarray:
    """Where `scenes.draw` paints the shape for this caption (default size, no jitter)."""
    return foreground(draw(Scene(colour, shape, background, where)), colour, background)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def on_named_side(mask: np.ndarray, where: str) -> bool:
    """Whether the mask's centroid lies on the side the place names (False for an empty mask)."""
    if not mask.any():
        return False
    rows, cols = np.nonzero(mask)
    x, y = cols.mean() / 63, rows.mean() / 63
    target_x, target_y = PLACES[where]
    if target_x != 0.5:  # left or right
        return bool((x > 0.5) == (target_x > 0.5))
    return bool((y > 0.5) == (target_y > 0.5))  # top or bottom


@dataclass
class LayoutScores:
    position_accuracy: float  # placed prompts whose foreground sits on the named side
    shape_iou: float  # mean IoU of the foreground with the named shape's drawn mask
    shape_accuracy: float  # share of images whose best-matching drawn shape is the named one
    per_prompt: dict[str, tuple[float, float]]  # prompt -> (IoU, shape accuracy)


def score_image(image: "Image.Image", colour: str, shape: str, where: str, background: str) -> tuple[float, bool, bool | None]:
    """(IoU with the named shape, named shape fits best, on the named side or None when unplaced)."""
    mask = foreground(image, colour, background)
    ious = {s: iou(mask, drawn_mask(colour, s, where, background)) for s in SHAPES}
    side = on_named_side(mask, where) if where else None
    return ious[shape], max(ious, key=ious.__getitem__) == shape, side


def layout_scores(pipeline: "FluxPipeline", seeds: list[int], prompts: list[tuple[str, str, str, str]] = LAYOUT_PROMPTS) -> LayoutScores:
    from .fidelity import render

    sides: list[bool] = []
    ious: list[float] = []
    right: list[bool] = []
    per_prompt = {}
    for colour, shape, where, background in prompts:
        prompt = f"a {colour} {shape}{' ' + where if where else ''} on a {background} background"
        scored = [score_image(image, colour, shape, where, background) for image in render(pipeline, prompt, seeds)]
        ious += [s[0] for s in scored]
        right += [s[1] for s in scored]
        sides += [s[2] for s in scored if s[2] is not None]
        per_prompt[prompt] = (float(np.mean([s[0] for s in scored])), float(np.mean([s[1] for s in scored])))
    return LayoutScores(float(np.mean(sides)), float(np.mean(ious)), float(np.mean(right)), per_prompt)
