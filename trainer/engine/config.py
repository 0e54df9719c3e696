"""The training config: one flat dataclass in commented sections, loaded from dicts or YAML.

Fields left as None take the base preset's value (`resolve()`), so a tiny base trains at 64 px
and FLUX.1-dev at 1024 px without the caller knowing either. Unknown keys and wrong types are
errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .presets import preset_for

TIMESTEP_SAMPLINGS = ("shift", "logit_normal", "sigmoid", "uniform")
OPTIMIZERS = ("auto", "adamw", "adamw8bit", "adafactor")
LR_SCHEDULERS = ("constant", "cosine", "linear")
MEMORY_MODES = ("fast", "low")
LORA_TARGETS = ("full", "attention")


@dataclass
class TrainConfig:
    # --- model -------------------------------------------------------------------------------
    base: str = "flux-dev"  # preset name (flux-dev, flux-schnell, tiny), hub id or local folder
    device: str = "auto"  # auto | cpu | cuda[:N]
    memory_mode: str = "fast"  # fast: bf16, no checkpointing; low: checkpointing, offload, 4-bit base
    # --- dataset -----------------------------------------------------------------------------
    images_dir: str = ""
    trigger_word: str = ""
    add_trigger_to_captions: bool = False  # prepend the trigger to captions that lack it
    caption_dropout: float = 0.05  # share of steps trained on the empty caption
    flip: bool = False  # random horizontal flip (both orientations are cached)
    # Bucket side length (buckets hold about resolution² pixels), a multiple of 16; a list such as
    # [512, 768, 1024] trains every image at each (sorted, duplicates dropped; one value is the
    # plain int); None: the preset's.
    resolution: int | list[int] | None = None
    max_sequence_length: int | None = None  # T5 token cap; None: preset's
    # Pad every caption to max_sequence_length, as diffusers' and kohya's trainers do: the caption
    # then trains on exactly the T5 states inference gives it (FLUX's pipeline pads without a mask,
    # so padding changes them), at the price of a longer text sequence in every step. Off: T5 runs
    # to the longest caption's length, the cheaper steps.
    pad_captions: bool = False
    # --- network -----------------------------------------------------------------------------
    lora_rank: int = 16
    lora_alpha: float | None = None  # None: equal to the rank (scale 1)
    lora_targets: str = "full"  # full: attention + feed-forward + single proj_mlp/proj_out
    init_lora: str | None = None  # start from this lora.safetensors (continue training)
    # --- train -------------------------------------------------------------------------------
    steps: int = 1000
    learning_rate: float = 1e-4
    batch_size: int = 1
    grad_accum: int = 1
    optimizer: str = "auto"  # auto: 8-bit AdamW in low memory mode on CUDA (bitsandbytes), else fused AdamW
    weight_decay: float = 1e-4
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0  # 0 disables clipping
    # 0: off. E.g. 0.99: the saved LoRA, checkpoints' LoRAs and samples use an exponential moving
    # average of the adapter's weights over the recent steps (ema.py), smoother than the last step's
    ema_decay: float = 0.0
    timestep_sampling: str = "shift"  # shift | logit_normal | sigmoid | uniform
    logit_mean: float = 0.0
    logit_std: float = 1.0
    guidance: float | None = None  # embedded guidance while training; None: preset's
    gradient_checkpointing: bool | None = None  # None: on in low memory mode only
    # torch.compile the transformer's blocks: faster steps after a one-off compile per image size
    # (about a minute on a CPU with a cold cache; see compiling.py): for long runs
    compile: bool = False
    # with compile, on CUDA: replay each compiled block as a CUDA graph, so a step is not held up
    # launching thousands of small kernels one by one from Python (what bounds small images on a
    # fast GPU). Needs grad_accum 1 and no gradient checkpointing (left off otherwise, with a log line)
    cuda_graphs: bool = False
    # fast mode on GPUs with FP8 tensor cores (L4, L40, RTX 40, H100, H200): the frozen base's block
    # matmuls in FP8 with per-tensor scales (fp8.py); the LoRA trains as before. Runs on a CPU too, slowly
    fp8: bool = False
    seed: int = 42
    val_every: int = 50  # validation loss every N steps (0: never)
    val_timesteps: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    # --- sample ------------------------------------------------------------------------------
    sample_prompts: list[str] | None = None  # None: ["a photo of <trigger>"], so samples/ is never empty; []: none
    sample_every: int = 250  # 0: only at the end
    sample_steps: int | None = None
    sample_guidance: float | None = None
    # --- save --------------------------------------------------------------------------------
    output_dir: str = ""
    checkpoint_every: int = 250  # 0: only when canceled
    keep_checkpoints: int = 2
    resume: bool = False  # continue from the latest checkpoint in output_dir

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build a config, rejecting unknown keys and values of the wrong type."""
        return _from_dict(cls, data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(_read_yaml(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, path: str | Path) -> Path:
        return _write_yaml(path, self.to_dict())

    def resolve(self) -> "TrainConfig":
        """A copy with preset defaults filled in, checked; what a run actually uses."""
        preset = preset_for(self.base)
        resolved = dataclasses.replace(
            self,
            resolution=_normalized_resolution(self.resolution) or preset.resolution,
            max_sequence_length=self.max_sequence_length or preset.max_sequence_length,
            lora_alpha=self.lora_alpha if self.lora_alpha is not None else float(self.lora_rank),
            guidance=self.guidance if self.guidance is not None else preset.train_guidance,
            gradient_checkpointing=(
                self.gradient_checkpointing if self.gradient_checkpointing is not None else self.memory_mode == "low"
            ),
            sample_prompts=default_sample_prompts(self.trigger_word) if self.sample_prompts is None else self.sample_prompts,
            sample_steps=self.sample_steps or preset.sample_steps,
            sample_guidance=self.sample_guidance if self.sample_guidance is not None else preset.sample_guidance,
        )
        resolved.validate()
        return resolved

    @property
    def resolutions(self) -> list[int]:
        """The resolution setting as a sorted list (empty while unresolved)."""
        return resolution_sides(self.resolution)

    @property
    def sample_resolution(self) -> int:
        """Side length of samples and the validation loss: the largest resolution trained."""
        return max(self.resolutions)

    def validate(self) -> None:
        """Raise a ConfigError naming the first setting that cannot work."""
        _check(bool(self.images_dir), "images_dir is required")
        _check(bool(self.output_dir), "output_dir is required")
        _check_resolution(self.resolution)
        _check(self.max_sequence_length is None or 1 <= self.max_sequence_length <= 512,
               "max_sequence_length must be between 1 and 512")
        _check(self.steps >= 1, "steps must be at least 1")
        _check(self.learning_rate > 0, "learning_rate must be positive")
        _check(self.lora_rank >= 1, "lora_rank must be at least 1")
        _check(self.lora_alpha is None or self.lora_alpha > 0, "lora_alpha must be positive")
        _check(self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be at least 1")
        _check(0.0 <= self.caption_dropout < 1.0, "caption_dropout must be in [0, 1)")
        _check(self.warmup_steps >= 0 and self.max_grad_norm >= 0, "warmup_steps and max_grad_norm must be >= 0")
        _check(0.0 <= self.ema_decay < 1.0, "ema_decay must be in [0, 1) (0 turns the weight average off)")
        _check(self.warmup_steps <= self.steps,
               f"warmup_steps ({self.warmup_steps}) is more than steps ({self.steps}): the run would never reach its learning rate")
        _check(min(self.val_every, self.sample_every, self.checkpoint_every) >= 0, "*_every must be >= 0")
        _check(self.keep_checkpoints >= 1, "keep_checkpoints must be at least 1")
        _check(all(0.0 < t < 1.0 for t in self.val_timesteps), "val_timesteps must lie strictly between 0 and 1")
        _check(bool(self.val_timesteps) or not self.val_every,
               "val_timesteps is empty: give noise levels such as [0.1, 0.5, 0.9], or set val_every: 0 for no validation")
        _check(self.logit_std > 0, "logit_std must be positive")
        _check(self.weight_decay >= 0, "weight_decay must be >= 0")
        _check(self.trigger_word.strip() == self.trigger_word, "trigger_word must not start or end with spaces")
        _check(self.compile or not self.cuda_graphs, "cuda_graphs replays compiled blocks: it needs compile: true")
        _check(not self.fp8 or self.memory_mode == "fast",
               "fp8 is a fast-mode setting: low memory mode's base is already 4-bit (NF4); use one or the other")
        for name, allowed in (("timestep_sampling", TIMESTEP_SAMPLINGS), ("optimizer", OPTIMIZERS),
                              ("lr_scheduler", LR_SCHEDULERS), ("memory_mode", MEMORY_MODES),
                              ("lora_targets", LORA_TARGETS)):  # fmt: skip
            value = getattr(self, name)
            _check(value in allowed, f"{name} must be one of {', '.join(allowed)}, not {value!r}")


def resolution_sides(value: Any) -> list[int]:
    """A resolution setting as side lengths, sorted, without duplicates; None gives [].

    The one parser for every door: an int (YAML, JSON), a whole float (JSON's 1024.0), a list of
    them, or text such as "512, 768, 1024" or "512 768" (the launch form). A ValueError names the
    part that is not a whole number of pixels, or says that no size was given. Ranges are the
    caller's to check (the engine takes any multiple of 16, the studio 32 to 2048).
    """
    if value is None:
        return []
    if isinstance(value, str):
        parts: list[Any] = value.replace(",", " ").split()
    else:
        parts = list(value) if isinstance(value, (list, tuple)) else [value]
    sides = [_whole_pixels(part) for part in parts]
    if not sides:
        raise ValueError("give a size in pixels, e.g. 1024, or several separated by commas")
    return sorted(set(sides))


def _whole_pixels(part: Any) -> int:
    if isinstance(part, int) and not isinstance(part, bool):
        return part
    if isinstance(part, float) and part.is_integer():
        return int(part)
    if isinstance(part, str) and part.strip().isdigit():
        return int(part)
    raise ValueError(f"{part!r} is not a whole number of pixels; give one size or several separated by commas, "
                     "e.g. 512, 768, 1024")


def resolution_value(sides: list[int]) -> int | list[int]:
    """The setting for sorted side lengths: one is the plain int, which trains (and resumes)
    exactly as `resolution: 512` does; several stay the list."""
    return sides[0] if len(sides) == 1 else sides


def _normalized_resolution(value: int | list[int] | None) -> int | list[int] | None:
    """Sorted and deduplicated, so [1024, 512] and [512, 1024, 512] are the same setting (for resume too)."""
    if not isinstance(value, list):
        return value
    if not value:
        raise ConfigError("resolution is an empty list: give a side length such as 512, or several, e.g. [512, 768, 1024]")
    try:
        return resolution_value(resolution_sides(value))
    except ValueError as error:
        raise ConfigError(f"resolution: {error}") from None


def _check_resolution(value: int | list[int] | None) -> None:
    """Each side length >= 16 and a multiple of 16: FLUX packs 2x2 latents of an 8x VAE."""
    for side in resolution_sides(value):
        where = f" (in {value})" if isinstance(value, list) else ""
        _check(side >= 16 and side % 16 == 0,
               f"resolution must be a multiple of 16 (FLUX packs 2x2 latents of an 8x VAE), got {side}{where}")


def sample_seed(seed: int, index: int) -> int:
    """The seed of the sample image of sample prompt number `index` (from 0) in a run seeded `seed`.

    Each prompt keeps its seed at every step, so samples compare like for like; the studio reads
    the same rule to say which seed remakes a sample on the generation page."""
    return seed + index


def default_sample_prompts(trigger_word: str) -> list[str]:
    """One prompt that shows what the trigger word learned (the web form offers the same default)."""
    return [f"a photo of {trigger_word}" if trigger_word else "a photo"]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


# --- dict / YAML plumbing shared with GenerateConfig ---------------------------------------------

T = typing.TypeVar("T")


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__} expects a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} key(s): {', '.join(unknown)}")
    for key, value in data.items():
        if not _matches(value, hints[key]):
            raise ConfigError(f"{key} must be {_type_name(hints[key])}, got {value!r}")
    return cls(**{key: _coerced(value, hints[key]) for key, value in data.items()})


def _matches(value: Any, hint: Any) -> bool:
    """A small runtime check of the annotation kinds configs use (no coercion of strings)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if origin is tuple:  # fixed-length tuples, e.g. (path, scale); YAML gives them as lists
        items = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and len(value) == len(items) and all(map(_matches, value, items))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:  # a whole float too: JSON writers may give 1024 as 1024.0
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, hint)


def _coerced(value: Any, hint: Any) -> Any:
    """A value that `_matches` accepted, as the annotation's type: ints where floats go, whole floats where ints do."""
    if isinstance(value, bool) or value is None:
        return value
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if isinstance(value, int) and float in kinds and int not in kinds:
        return float(value)
    if isinstance(value, float) and int in kinds and float not in kinds:
        return int(value)
    if isinstance(value, (list, tuple)):
        for kind in kinds:
            if typing.get_origin(kind) is list and _matches(value, kind):
                (item,) = typing.get_args(kind)
                return [_coerced(v, item) for v in value]
    return value


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config {path}: {error}") from error
    return data or {}


def _write_yaml(path: str | Path, data: dict[str, Any]) -> Path:
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path
