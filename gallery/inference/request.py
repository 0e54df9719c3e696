"""What one generation asks for, as plain data, checked before any model is touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

MAX_SIDE = 2048
MAX_IMAGES = 8
MAX_STEPS = 100
MAX_LORAS = 4


class RequestError(ValueError):
    """A request that cannot run as given (the message says what to change)."""


@dataclass(frozen=True)
class LoraSpec:
    path: Path  # a diffusers-layout (or kohya) .safetensors file on local disk
    scale: float = 1.0


@dataclass(frozen=True)
class GenerationRequest:
    base: str
    prompt: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    max_sequence_length: int
    num_images: int = 1
    loras: tuple[LoraSpec, ...] = field(default_factory=tuple)

    def seed_of(self, index: int) -> int:
        # Image i uses seed + i, so any single image can be made again alone from its seed.
        return self.seed + index

    def validate(self) -> "GenerationRequest":
        if not self.prompt.strip():
            raise RequestError("the prompt is empty")
        for side in (self.width, self.height):
            if not 16 <= side <= MAX_SIDE or side % 16:
                raise RequestError(f"width and height must be multiples of 16 up to {MAX_SIDE}, got {self.width}x{self.height}")
        if not 1 <= self.num_images <= MAX_IMAGES:
            raise RequestError(f"number of images must be 1 to {MAX_IMAGES}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise RequestError(f"steps must be 1 to {MAX_STEPS}")
        if len(self.loras) > MAX_LORAS:
            raise RequestError(f"at most {MAX_LORAS} LoRAs at once")
        for lora in self.loras:
            if not Path(lora.path).is_file():
                raise RequestError(f"LoRA file {lora.path} does not exist")
            if Path(lora.path).suffix != ".safetensors":  # diffusers chooses its reader by extension
                raise RequestError(f"LoRA file {Path(lora.path).name} must end in .safetensors")
        return self
