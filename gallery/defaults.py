"""Per-base generation defaults and limits (plain Python: safe to import in web requests).

The numbers come from the engine's base presets, so a base trained at 64 px is sampled at
64 px and schnell gets its 4 steps without guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.engine.presets import preset_for

# Aspect ratios offered on the page; each becomes a size with about the base's pixel count.
ASPECTS = (("1:1", 1, 1), ("4:3", 4, 3), ("3:4", 3, 4), ("3:2", 3, 2), ("2:3", 2, 3), ("16:9", 16, 9), ("9:16", 9, 16))

LIMITS = {
    "steps": (1, 100),
    "guidance": (0.0, 20.0),
    "num_images": (1, 4),
    "scale": (-2.0, 2.0),
    "seed": (0, 2**32 - 1),
    "prompt_chars": (1, 1000),
    "loras": (0, 4),
}

# Bases without a guidance embedding ignore the value; the page says so instead of offering it.
GUIDANCE_FREE = {"flux-schnell"}


@dataclass(frozen=True)
class SizeChoice:
    aspect: str
    width: int
    height: int

    @property
    def value(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def label(self) -> str:
        return f"{self.aspect} · {self.width}×{self.height}"


@dataclass(frozen=True)
class GenerationDefaults:
    base: str
    steps: int
    guidance: float
    width: int
    height: int
    max_sequence_length: int
    uses_guidance: bool
    sizes: tuple[SizeChoice, ...]


def _round16(value: float) -> int:
    return max(16, int(round(value / 16)) * 16)


def size_choices(resolution: int) -> tuple[SizeChoice, ...]:
    """Sizes with about resolution² pixels for each aspect ratio, sides multiples of 16."""
    area = resolution * resolution
    choices: list[SizeChoice] = []
    for name, w, h in ASPECTS:
        unit = (area / (w * h)) ** 0.5
        choice = SizeChoice(name, _round16(unit * w), _round16(unit * h))
        # On a small base several ratios round to one size: offer it once, under the first name.
        if all((c.width, c.height) != (choice.width, choice.height) for c in choices):
            choices.append(choice)
    return tuple(choices)


def defaults_for(base: str) -> GenerationDefaults:
    preset = preset_for(base)
    uses_guidance = base not in GUIDANCE_FREE
    return GenerationDefaults(
        base=base,
        steps=preset.sample_steps,
        guidance=preset.sample_guidance if uses_guidance else 0.0,
        width=preset.resolution,
        height=preset.resolution,
        max_sequence_length=preset.max_sequence_length,
        uses_guidance=uses_guidance,
        sizes=size_choices(preset.resolution),
    )
