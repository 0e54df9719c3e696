"""Suggest FLUX training captions for photos with a vision-language model (pure ML, no Django).

    captioner = load_captioner("florence2")          # or "blip", "smolvlm", "vlm:/models/x"
    style = CaptionStyle(trigger="JELLOMOLD", placement="prefix")
    results = caption_images(captioner, paths, batch_size=8, style=style, on_caption=print)
    unload_captioners()                                # free the GPU before training

When no weights can be loaded here, `load_captioner` raises `CaptionerUnavailable` (a
ValueError) whose message says why and what to do; fall back to `template_caption(trigger)`.
The VLM instruction defaults to `DEFAULT_VLM_PROMPT` and is changed with `prompt=`.
"""

from .backends import DEFAULT_PROMPTS, DEFAULT_VLM_PROMPT, FLORENCE_TASKS, Captioner
from .images import ImageUnreadable, load_image
from .loading import (
    CAPTIONER_PRESETS, DEFAULT_CAPTIONER, CaptionerPreset, CaptionerUnavailable, load_captioner,
    resolve_spec, unload_captioners,
)
from .runner import CaptionResult, caption_images
from .style import CaptionStyle, clean_caption, style_caption, template_caption
from .tiny import build_tiny_blip, build_tiny_florence2, build_tiny_smolvlm

__all__ = [
    "CAPTIONER_PRESETS",
    "DEFAULT_CAPTIONER",
    "DEFAULT_PROMPTS",
    "DEFAULT_VLM_PROMPT",
    "FLORENCE_TASKS",
    "CaptionResult",
    "CaptionStyle",
    "Captioner",
    "CaptionerPreset",
    "CaptionerUnavailable",
    "ImageUnreadable",
    "build_tiny_blip",
    "build_tiny_florence2",
    "build_tiny_smolvlm",
    "caption_images",
    "clean_caption",
    "load_captioner",
    "load_image",
    "resolve_spec",
    "style_caption",
    "template_caption",
    "unload_captioners",
]
