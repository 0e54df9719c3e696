"""FLUX.1 LoRA training engine: pure ML (torch, diffusers, peft, transformers), never Django.

Importing this package is cheap: the config, hooks and errors are plain Python, and the parts
that need torch (`train`, `generate`, `load_pipeline`, ...) are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import TrainConfig
from .errors import BaseModelLoadError, CheckpointError, ConfigError, DatasetError, EngineError, OutOfMemoryError
from .hooks import PrintHooks, Progress, TrainHooks, TrainResult
from .presets import BASE_PRESETS, BasePreset, preset_for

# name -> module that defines it, imported lazily (these pull in torch and diffusers).
_LAZY = {
    "train": ".training",
    "generate": ".generation",
    "GenerateConfig": ".generation",
    "load_pipeline": ".models",
    "build_tiny_pipeline": ".tiny",
    "save_tiny_pipeline": ".tiny",
    "TinySpec": ".tiny",
    "tiny_base_dir": ".tiny",
}

__all__ = [
    "BASE_PRESETS", "BaseModelLoadError", "BasePreset", "CheckpointError", "ConfigError", "DatasetError",
    "EngineError", "OutOfMemoryError", "PrintHooks", "Progress", "TrainConfig", "TrainHooks", "TrainResult",
    "preset_for", *_LAZY,
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
