"""Suggest FLUX training captions for photos with a vision-language model (pure ML, no Django).

    captioner = load_captioner("florence2")          # or "blip", "smolvlm", "vlm:/models/x"
    style = CaptionStyle(trigger="JELLOMOLD", placement="prefix")
    results = caption_images(captioner, paths, batch_size=8, style=style, on_caption=print)
    unload_captioners()                                # free the GPU before training

When no weights can be loaded here, `load_captioner` raises `CaptionerUnavailable` (a
ValueError) whose message says why and what to do; fall back to `template_caption(trigger)`.
The VLM instruction defaults to `DEFAULT_VLM_PROMPT` and is changed with `prompt=`.

Importing this package is cheap: the presets, prompts and caption styling are plain Python (the
web process uses them to show choices and to place trigger words); the parts that need torch
and transformers are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .presets import (
    CAPTIONER_PRESETS, DEFAULT_CAPTIONER, DEFAULT_PROMPTS, DEFAULT_VLM_PROMPT, FLORENCE_TASKS,
    CaptionerPreset, prompt_for_kind,
)
from .style import CaptionStyle, clean_caption, replace_subject, style_caption, template_caption

# name -> submodule that defines it, imported lazily (these pull in torch and transformers).
_LAZY = {
    "Captioner": ".backends",
    "ImageUnreadable": ".images",
    "load_image": ".images",
    "CaptionerUnavailable": ".loading",
    "load_captioner": ".loading",
    "resolve_spec": ".loading",
    "unload_captioners": ".loading",
    "CaptionResult": ".runner",
    "caption_images": ".runner",
    "build_tiny_blip": ".tiny",
    "build_tiny_florence2": ".tiny",
    "build_tiny_smolvlm": ".tiny",
}

__all__ = [
    "CAPTIONER_PRESETS", "DEFAULT_CAPTIONER", "DEFAULT_PROMPTS", "DEFAULT_VLM_PROMPT", "FLORENCE_TASKS",
    "CaptionStyle", "CaptionerPreset", "clean_caption", "prompt_for_kind", "replace_subject", "style_caption",
    "template_caption", *_LAZY,
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
