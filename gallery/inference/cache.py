"""A worker's pipeline cache: one base loaded once, LoRAs swapped per request.

Loading FLUX.1 takes tens of seconds and ~30 GB; a LoRA is a few megabytes. So the cache keeps
the last base pipeline and, per request, makes the adapters on it exactly the requested ones:
adapters no longer wanted are deleted, new ones are loaded with diffusers' `load_lora_weights`,
and `set_adapters` sets the scales. Adapters still wanted stay loaded, so a person iterating on
prompts with the same LoRA pays nothing for it. The denoising call itself is plain
`FluxPipeline.__call__`, so an image equals what diffusers alone gives for the same inputs.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .request import GenerationRequest, LoraSpec, RequestError

if TYPE_CHECKING:
    import torch
    from diffusers import FluxPipeline
    from PIL import Image

Loader = Callable[[str, "torch.device", "torch.dtype"], "FluxPipeline"]


class GenerationCanceled(Exception):
    """Raised when the hooks asked to stop; images already delivered stay delivered."""


class GenerationHooks:
    """What the cache reports while it works. Subclass and override what you need."""

    def on_step(self, image_index: int, step: int, total_steps: int) -> None: ...

    def on_image(self, image_index: int, seed: int, image: "Image.Image") -> None: ...

    def should_stop(self) -> bool:
        return False


@dataclass
class CacheStats:
    base_loads: int = 0  # times a base pipeline was built or read from disk
    lora_loads: int = 0  # adapters loaded into the transformer
    lora_unloads: int = 0
    adapter_sets: int = 0  # set_adapters calls (skipped when a request keeps the same LoRAs and scales)
    last_swap_s: float = 0.0  # seconds spent making the adapters match the last request
    events: list[str] = field(default_factory=list)


def _default_loader(base: str, device: "torch.device", dtype: "torch.dtype") -> "FluxPipeline":
    from trainer.engine.models import load_pipeline  # pure ML like this package

    return load_pipeline(base, device, dtype)


def _lora_key(spec: LoraSpec) -> tuple[str, int, int]:
    # Path plus mtime and size: a file replaced in place (a continued training) is reloaded.
    stat = Path(spec.path).stat()
    return (str(Path(spec.path).resolve()), stat.st_mtime_ns, stat.st_size)


class PipelineCache:
    def __init__(self, device: str = "auto", dtype: "torch.dtype | None" = None, loader: Loader | None = None) -> None:
        self.device_name = device
        self.dtype = dtype
        self.loader = loader or _default_loader
        self.stats = CacheStats()
        self._base: str | None = None
        self._pipeline: "FluxPipeline | None" = None
        self._adapters: dict[tuple[str, int, int], str] = {}  # file key -> adapter name
        self._active: tuple[tuple[str, ...], tuple[float, ...]] | None = None  # names and scales set last
        self._counter = 0
        self._lock = threading.Lock()  # one request at a time on one pipeline

    # -- base --------------------------------------------------------------------------------
    def pipeline(self, base: str) -> "FluxPipeline":
        """The pipeline for `base`, loading it only when another base (or none) is held."""
        if self._pipeline is not None and self._base == base:
            return self._pipeline
        self.release()
        import torch

        from trainer.engine.models import compute_dtype, resolve_device

        device = resolve_device(self.device_name)
        dtype = self.dtype or compute_dtype(device)
        pipeline = self.loader(base, device, dtype)
        pipeline.set_progress_bar_config(disable=True)
        self._pipeline, self._base = pipeline, base
        self.stats.base_loads += 1
        self.stats.events.append(f"load base {base} on {device} ({str(dtype).replace('torch.', '')})")
        del torch
        return pipeline

    def release(self) -> None:
        """Drop the base (and its adapters), e.g. before a training needs the GPU memory."""
        if self._pipeline is None:
            return
        self._pipeline, self._base = None, None
        self._adapters.clear()
        self._active = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def loaded_base(self) -> str | None:
        return self._base

    @property
    def loaded_adapters(self) -> list[str]:
        return list(self._adapters.values())

    # -- LoRAs -------------------------------------------------------------------------------
    def set_loras(self, pipeline: "FluxPipeline", loras: tuple[LoraSpec, ...]) -> None:
        """Make the active adapters exactly `loras`, at their scales."""
        started = time.perf_counter()
        wanted = {_lora_key(spec): spec for spec in loras}
        if len(wanted) != len(loras):
            raise RequestError("the same LoRA is listed twice")
        stale = [key for key in self._adapters if key not in wanted]
        if stale:
            pipeline.delete_adapters([self._adapters.pop(key) for key in stale])
            self.stats.lora_unloads += len(stale)
        for key, spec in wanted.items():
            if key not in self._adapters:
                # A load that fails part-way may change the pipeline's active adapters: forget
                # what we believe is active, so the next request sets its adapters again.
                self._active = None
                self._adapters[key] = self._load_adapter(pipeline, spec)
        active = (tuple(self._adapters[key] for key in wanted), tuple(float(spec.scale) for spec in wanted.values()))
        # set_adapters walks every module of the transformer: skip it when nothing changed.
        if loras and (stale or active != self._active):
            pipeline.set_adapters(list(active[0]), adapter_weights=list(active[1]))
            self.stats.adapter_sets += 1
        self._active = active if loras else None
        self.stats.last_swap_s = time.perf_counter() - started

    def _load_adapter(self, pipeline: "FluxPipeline", spec: LoraSpec) -> str:
        self._counter += 1
        name = f"studio_{self._counter}"
        path = Path(spec.path)
        try:
            pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as error:
            self._forget_partial(pipeline, name)
            raise RequestError(f"{path.name} is not a LoRA for this base model: {str(error)[:200]}") from error
        self.stats.lora_loads += 1
        return name

    @staticmethod
    def _forget_partial(pipeline: "FluxPipeline", name: str) -> None:
        # A load that failed half-way may have injected some layers; remove them if so.
        try:
            pipeline.delete_adapters([name])
        except Exception:  # nothing was injected: there is nothing to remove
            pass

    def unload_loras(self) -> None:
        if self._pipeline is not None and self._adapters:
            self._pipeline.delete_adapters(list(self._adapters.values()))
            self.stats.lora_unloads += len(self._adapters)
        self._adapters.clear()
        self._active = None

    # -- generation --------------------------------------------------------------------------
    def generate(self, request: GenerationRequest, hooks: GenerationHooks | None = None) -> list["Image.Image"]:
        """Images for `request`, one call per image (seed + i), each handed to hooks as it ends."""
        request.validate()
        hooks = hooks or GenerationHooks()
        with self._lock:
            pipeline = self.pipeline(request.base)
            self.set_loras(pipeline, request.loras)
            return [self._one_image(pipeline, request, i, hooks) for i in range(request.num_images)]

    def _one_image(self, pipeline: "FluxPipeline", request: GenerationRequest, index: int, hooks: GenerationHooks) -> "Image.Image":
        import torch

        def step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            hooks.on_step(index, step + 1, request.steps)
            if hooks.should_stop():
                pipe._interrupt = True  # FluxPipeline skips the remaining steps
            return tensors

        if hooks.should_stop():
            raise GenerationCanceled()
        seed = request.seed_of(index)
        with torch.inference_mode():
            image = pipeline(
                prompt=request.prompt,
                height=request.height,
                width=request.width,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                max_sequence_length=request.max_sequence_length,
                # A CPU generator gives the same noise on every device, so a seed means one image.
                generator=torch.Generator("cpu").manual_seed(seed),
                callback_on_step_end=step_end,
            ).images[0]
        if getattr(pipeline, "_interrupt", False):
            raise GenerationCanceled()
        hooks.on_image(index, seed, image)
        return image
