"""Captioner presets and default prompts: plain data, no torch, so the web side can show them.

The web process offers these names in the Caption style panel and shows the default prompt as
a placeholder; only the worker loads the models they name (see `loading`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionerPreset:
    kind: str
    source: str  # a hub id (or a local folder)
    description: str


# Florence-2-large is the default: the best detail per second of the three families, and
# florence-community/* is its native-transformers conversion (microsoft/Florence-2-* needs
# trust_remote_code, which we never enable). 0.77B parameters: ~1.6 GB in bf16.
CAPTIONER_PRESETS: dict[str, CaptionerPreset] = {
    "florence2": CaptionerPreset(
        "florence2", "florence-community/Florence-2-large", "Florence-2 large, detailed captions"
    ),
    "florence2-base": CaptionerPreset(
        "florence2", "florence-community/Florence-2-base", "Florence-2 base, faster, less detail"
    ),
    "blip": CaptionerPreset(
        "blip", "Salesforce/blip-image-captioning-large", "BLIP large, short one-line captions"
    ),
    # SmolVLM v1 (Idefics3 classes): its processor needs no torchvision, so it runs anywhere.
    "smolvlm": CaptionerPreset(
        "vlm", "HuggingFaceTB/SmolVLM-Instruct", "SmolVLM 2.2B, follows an edited prompt"
    ),
    # Qwen2.5-VL's processor includes a video processor that transformers 5 builds only with
    # torchvision installed (the CUDA box has it; the CPU-only install here does not).
    "qwen2.5-vl": CaptionerPreset(
        "vlm", "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL 3B, best prose, ~8 GB GPU, torchvision"
    ),
}
DEFAULT_CAPTIONER = "florence2"

FLORENCE_TASKS: tuple[str, ...] = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")
# The VLM prompt asks for what a FLUX caption needs: prose about subject, setting and look,
# without the "The image shows" opener that every caption would otherwise share.
DEFAULT_VLM_PROMPT = (
    "Write a caption for this image to train a text-to-image model: one to three natural "
    "sentences describing the main subject, what it is doing, the setting, the lighting and "
    "the photographic style. Start with the subject; do not begin with 'The image shows'."
)
DEFAULT_PROMPTS: dict[str, str] = {
    "florence2": "<MORE_DETAILED_CAPTION>",
    "blip": "",  # unconditional captioning
    "vlm": DEFAULT_VLM_PROMPT,
}


def prompt_for_kind(kind: str, prompt: str | None) -> str | None:
    """What an edited caption prompt means for each family; None keeps the family's default.

    - ``vlm`` (SmolVLM, Qwen2.5-VL): the instruction itself, sent as the user's chat message.
    - ``florence2``: not instruction-following; it takes one of FLORENCE_TASKS (e.g.
      ``<DETAILED_CAPTION>`` for shorter captions). Any other text is ignored.
    - ``blip``: continues a text prefix that is then cut from the caption, so an instruction
      would only derail it; it always captions unconditionally (the caption style's prefix
      text is the way to start every caption the same).
    """
    prompt = " ".join((prompt or "").split())
    if not prompt:
        return None
    if kind == "vlm":
        return prompt
    if kind == "florence2" and prompt in FLORENCE_TASKS:
        return prompt
    return None
