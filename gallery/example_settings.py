"""What an example image was made with, and how the model page says it.

A training sample is drawn by the engine with settings of its own, not the training's: the seed
of its sample prompt (`trainer.engine.config.sample_seed`), the base's sampling steps and
guidance, and the largest resolution trained. Those are what remake it on the generation page.
Plain Python (the engine's config and presets import no torch).
"""

from __future__ import annotations

import re
from typing import Any

from gallery.defaults import LIMITS
from trainer.engine.config import resolution_sides, sample_seed
from trainer.engine.presets import preset_for
from trainer.models import TrainingJob

# How a public example names the LoRAs its picture was made with, besides published models' titles
# (gallery.services_gallery.public_lora_label).
THIS_MODEL = "this model"
PRIVATE_LORA = "a private LoRA"

SAMPLE_SOURCE_RE = re.compile(r"^training sample, step (\d+)$")


def sample_source(step: int) -> str:
    """The `source` an example made from a training sample carries (it also tells them apart)."""
    return f"training sample, step {step}"


def sample_settings(job: TrainingJob, prompt: str, step: int) -> dict[str, Any]:
    """The settings the engine drew `job`'s sample of `prompt` at `step` with.

    The seed follows from the prompt's place among the training's sample prompts; when the prompt
    is not among them (it cannot be placed) no seed is claimed."""
    config, preset = job.config or {}, preset_for(job.base_model)
    try:
        side = max(resolution_sides(config.get("resolution"))) if config.get("resolution") else preset.resolution
    except ValueError:
        side = preset.resolution
    settings: dict[str, Any] = {"steps": preset.sample_steps, "guidance": preset.sample_guidance, "width": side,
                                "height": side, "base_model": job.base_model, "source": sample_source(step),
                                "sample_step": step}
    prompts = config.get("sample_prompts") or []
    if isinstance(config.get("seed"), int) and prompt in prompts:
        seed = sample_seed(config["seed"], prompts.index(prompt))
        if seed <= LIMITS["seed"][1]:  # past the generation page's range (a training seeded near 2**32): not claimed
            settings["seed"] = seed
    return settings


def shown_settings(example: Any) -> dict[str, Any]:
    """An example's settings as they really were. Examples made from samples before the settings
    were recorded carry the training's seed, which did not make them: theirs are worked out anew."""
    settings = dict(example.settings or {})
    match = SAMPLE_SOURCE_RE.match(str(settings.get("source", "")))
    if match and "sample_step" not in settings:
        settings = sample_settings(example.gallery_model.training, example.prompt, int(match.group(1)))
    return settings


def settings_words(settings: dict[str, Any]) -> list[str]:
    """The settings as a person reads them, in order, e.g. ["Base: demo", "From the training's sample at
    step 30", "Seed 42", "28 steps", "guidance 3.5", "64×64"]; the page joins them with " · "."""
    words = []
    if settings.get("base_model"):
        words.append(f"Base: {settings['base_model']}")
    match = SAMPLE_SOURCE_RE.match(str(settings.get("source", "")))
    if match:
        words.append(f"From the training's sample at step {match.group(1)}")
    words.append(f"Seed {settings['seed']}" if settings.get("seed") is not None else "Seed unknown")
    if settings.get("steps") is not None:
        words.append(f"{settings['steps']} steps")
    if settings.get("guidance") is not None:
        words.append(f"guidance {settings['guidance']:g}" if isinstance(settings["guidance"], float)
                     else f"guidance {settings['guidance']}")
    if settings.get("width") and settings.get("height"):
        words.append(f"{settings['width']}×{settings['height']}")
    for lora in settings.get("loras") or []:
        if isinstance(lora, dict) and lora.get("label"):
            named = lora["label"] if lora["label"] in (THIS_MODEL, PRIVATE_LORA) else f"LoRA {lora['label']}"
            words.append(f"{named} ×{lora.get('scale', 1)}")
    return words
