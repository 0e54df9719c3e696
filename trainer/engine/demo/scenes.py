"""Procedural captioned scenes: one coloured shape on a plain background, drawn with PIL.

Everything is a pure function of a seed, so the pretraining set, the LoRA concept set and the
test prompts are reproducible bit for bit. Captions follow one grammar,

    "a {colour} {shape}[ {where}] on a {background} background"

so a prompt a person types ("a red circle on a blue background") is exactly the kind of text
the demo base was trained on. Without a `where` phrase the shape sits near the centre.

The LoRA concept (`CONCEPT_*`) uses colours that never occur in pretraining (pink and teal) in a
pattern that never occurs either (a checkerboard), so a fine-tune that reproduces it has learned
something the base could not draw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 64
# The pretraining palette. Pink and teal are deliberately absent: they belong to the LoRA concept.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "orange": (245, 130, 20),
    "purple": (130, 40, 170),
}
SHAPES = ("circle", "square", "triangle")
# where -> centre of the shape as a fraction of the side (x, y)
PLACES: dict[str, tuple[float, float]] = {
    "": (0.5, 0.5),
    "at the left": (0.27, 0.5),
    "at the right": (0.73, 0.5),
    "at the top": (0.5, 0.27),
    "at the bottom": (0.5, 0.73),
}
# The LoRA concept: a pink and teal checkerboard background, named by the trigger word.
CONCEPT_TRIGGER = "zqx"
CONCEPT_COLOURS: tuple[tuple[int, int, int], tuple[int, int, int]] = ((250, 110, 190), (0, 140, 140))
CONCEPT_CELL = 16  # checker cell side in pixels: two latent pixels, coarse enough for the small VAE
# Every word a demo caption uses; the tokenizers give each its own token.
VOCAB = sorted({"a", "on", "background", "at", "the", "left", "right", "top", "bottom", *COLOURS, *SHAPES})


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    background: str  # a COLOURS name, or CONCEPT_TRIGGER for the checkerboard
    where: str = ""
    radius: float = 0.22  # half the shape's side, as a fraction of the image side
    jitter: tuple[float, float] = (0.0, 0.0)  # offset of the centre, fraction of the side

    @property
    def caption(self) -> str:
        where = f" {self.where}" if self.where else ""
        return f"a {self.colour} {self.shape}{where} on a {self.background} background"


def draw(scene: Scene, size: int = SIZE) -> Image.Image:
    """Render a scene as an RGB image of `size` x `size`."""
    image = Image.new("RGB", (size, size), COLOURS.get(scene.background, CONCEPT_COLOURS[0]))
    pen = ImageDraw.Draw(image)
    if scene.background == CONCEPT_TRIGGER:
        cell = CONCEPT_CELL * size // SIZE
        for row in range(0, size, cell):
            for col in range(0, size, cell):
                if (row // cell + col // cell) % 2:
                    pen.rectangle((col, row, col + cell - 1, row + cell - 1), fill=CONCEPT_COLOURS[1])
    fx, fy = PLACES[scene.where]
    cx, cy = (fx + scene.jitter[0]) * size, (fy + scene.jitter[1]) * size
    r = scene.radius * size
    fill = COLOURS[scene.colour]
    if scene.shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif scene.shape == "square":
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        pen.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    return image


def random_scene(rng: random.Random, backgrounds: list[str] | None = None) -> Scene:
    """A scene with a random shape, two different colours, a place, size and a little jitter."""
    colour = rng.choice(sorted(COLOURS))
    background = rng.choice([b for b in (backgrounds or sorted(COLOURS)) if b != colour])
    where = rng.choice(list(PLACES)) if rng.random() < 0.6 else ""  # 40%: no place, centred
    return Scene(
        colour=colour,
        shape=rng.choice(SHAPES),
        background=background,
        where=where,
        radius=rng.uniform(0.16, 0.26),
        jitter=(rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)),
    )


def random_scenes(count: int, seed: int) -> list[Scene]:
    rng = random.Random(seed)
    return [random_scene(rng) for _ in range(count)]


def concept_scenes(count: int, seed: int) -> list[Scene]:
    """Scenes on the checkerboard background, captioned with the trigger word as the background."""
    rng = random.Random(seed)
    return [random_scene(rng, backgrounds=[CONCEPT_TRIGGER]) for _ in range(count)]


def write_dataset(folder: str | Path, scenes: list[Scene]) -> Path:
    """Write scenes as NNN.png + NNN.txt caption pairs (the layout the engine's train() reads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, scene in enumerate(scenes):
        draw(scene).save(folder / f"{index:04d}.png")
        (folder / f"{index:04d}.txt").write_text(scene.caption + "\n")
    return folder


def random_palette_image(rng: random.Random, size: int = SIZE) -> Image.Image:
    """Any RGB colours, sometimes a checkerboard: only for the VAE, so it can decode colours
    (like the LoRA concept's pink and teal) that the transformer never saw in pretraining."""
    pick = lambda: tuple(rng.randrange(256) for _ in range(3))  # noqa: E731
    image = Image.new("RGB", (size, size), pick())
    pen = ImageDraw.Draw(image)
    if rng.random() < 0.3:
        cell, other = rng.choice((4, 8, 16)), pick()
        for row in range(0, size, cell):
            for col in range(0, size, cell):
                if (row // cell + col // cell) % 2:
                    pen.rectangle((col, row, col + cell - 1, row + cell - 1), fill=other)
    cx, cy, r = rng.uniform(10, 54), rng.uniform(10, 54), rng.uniform(6, 20)
    shape = rng.choice(SHAPES)
    if shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=pick())
    elif shape == "square":
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=pick())
    else:
        pen.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=pick())
    return image
