"""Image generation with a base and any number of trained LoRAs: `generate(config) -> images`.

It is plain `FluxPipeline.__call__` with the LoRAs loaded through diffusers, so an image made
here is the image anyone gets from diffusers with the same files, prompt and seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import _from_dict
from .errors import ConfigError
from .presets import preset_for

if TYPE_CHECKING:
    from diffusers import FluxPipeline
    from PIL import Image

LORA_FILE = "lora.safetensors"


@dataclass
class GenerateConfig:
    base: str = "flux-dev"
    prompt: str = ""
    loras: list[tuple[str, float]] = field(default_factory=list)  # (lora file or training folder, scale)
    seed: int = 0  # image i of a request uses seed + i, so each one can be remade alone
    steps: int | None = None  # None: the preset's
    guidance: float | None = None
    width: int | None = None  # None: the preset's resolution
    height: int | None = None
    num_images: int = 1
    device: str = "auto"
    max_sequence_length: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerateConfig":
        return _from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolve(self) -> "GenerateConfig":
        preset = preset_for(self.base)
        resolved = replace(
            self,
            steps=self.steps or preset.sample_steps,
            guidance=self.guidance if self.guidance is not None else preset.sample_guidance,
            width=self.width or preset.resolution,
            height=self.height or preset.resolution,
            max_sequence_length=self.max_sequence_length or preset.max_sequence_length,
        )
        resolved.validate()
        return resolved

    def validate(self) -> None:
        if not self.prompt.strip():
            raise ConfigError("prompt is empty")
        for side in (self.width, self.height):
            if side is not None and (side < 16 or side % 16):
                raise ConfigError(f"width and height must be multiples of 16, got {self.width}x{self.height}")
        if not 1 <= self.num_images <= 16:
            raise ConfigError("num_images must be between 1 and 16")
        if self.steps is not None and self.steps < 1:
            raise ConfigError("steps must be at least 1")


def lora_file(path: str | Path) -> Path:
    """A LoRA file, or the lora.safetensors inside a training output folder."""
    path = Path(path)
    if path.is_dir():
        path = path / LORA_FILE
    if not path.is_file():
        raise ConfigError(f"LoRA {path} does not exist")
    return path


def generate(
    config: GenerateConfig,
    pipeline: "FluxPipeline | None" = None,
    on_step: Callable[[int, int], None] | None = None,
) -> list["Image.Image"]:
    """Images for one prompt. A pipeline passed in (a worker's cached one) is left as it was found."""
    import torch

    from .models import compute_dtype, load_pipeline, resolve_device

    cfg = config.resolve()
    files = [(lora_file(path), scale) for path, scale in cfg.loras]  # fail before loading anything
    device = resolve_device(cfg.device)
    if pipeline is None:
        pipeline = load_pipeline(cfg.base, device, compute_dtype(device))
        pipeline.set_progress_bar_config(disable=True)
    names: list[str] = []  # adapters loaded so far, removed again at the end
    try:
        for i, (path, _) in enumerate(files):
            try:
                pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=f"flux_studio_{i}")
            except (ValueError, KeyError, RuntimeError) as error:
                raise ConfigError(f"{path} is not a LoRA for this base: {error}") from error
            names.append(f"flux_studio_{i}")
        if names:
            pipeline.set_adapters(names, adapter_weights=[scale for _, scale in files])

        def step_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if on_step is not None:
                on_step(index + 1, cfg.steps)  # type: ignore[arg-type]
            return tensors

        return pipeline(
            prompt=cfg.prompt,
            height=cfg.height,
            width=cfg.width,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance,
            max_sequence_length=cfg.max_sequence_length,
            num_images_per_prompt=cfg.num_images,
            generator=[torch.Generator().manual_seed(cfg.seed + i) for i in range(cfg.num_images)],
            callback_on_step_end=step_end,
        ).images
    finally:
        if names:
            pipeline.delete_adapters(names)
