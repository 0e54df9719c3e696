"""How to use a published LoRA outside the studio: what the model page and the Hub's model card show.

A LoRA loads only onto the base it was trained on. The FLUX.1 presets name their Hub ids
(`flux-dev` is black-forest-labs/FLUX.1-dev), so diffusers finds them anywhere. The studio's
built-in bases are not on the Hub (the `demo` weights ship with FLUX Studio, `tiny` is built in
code): a diffusers snippet naming them cannot work, so for those the recipe is the engine's
command line, run from a FLUX Studio checkout.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from django.utils.html import strip_tags
from django.utils.text import slugify

from gallery.defaults import defaults_for
from trainer.engine.presets import BASE_PRESETS

# The Hub's repo names: letters, digits, '-', '_', '.'; an optional namespace (user or org).
REPO_RE = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
# A gallery model's LoRA files, by the training's file field: how each one's download name ends.
DOWNLOAD_ENDINGS = {"lora_file": ".safetensors", "kohya_file": "-kohya.safetensors"}


def download_name(*, title: str, trigger_word: str, field: str) -> str:
    """A gallery model's LoRA file as downloaded, from its page or over the API: "portraits-zqx.safetensors"
    (the kohya layout's "…-zqx-kohya.safetensors"). ASCII letters, digits, '-' and '_' only, so that every
    browser, shell and S3 signed URL keeps it as it is; the trigger word keeps its case, as prompts need it."""
    trigger = unicodedata.normalize("NFKD", trigger_word).encode("ascii", "ignore").decode()
    trigger = re.sub(r"[^A-Za-z0-9_-]", "", trigger)
    # A title is plain text, but one pasted with markup ("<b>friends</b>") should not name the file
    # "bfriendsb"; and a title that already holds the trigger word as it is typed does not get it
    # twice (the slug is lower case: a trigger in capitals is still added, in its case).
    slug = slugify(strip_tags(title)) or "lora"
    named = trigger in slug.split("-")
    return f"{slug}{f'-{trigger}' if trigger and not named else ''}{DOWNLOAD_ENDINGS[field]}"


def hub_base_model(base_model: str) -> str | None:
    """The Hub id of a base model ('flux-dev' -> 'black-forest-labs/FLUX.1-dev'); None for local or built-in ones."""
    preset = BASE_PRESETS.get(base_model)
    source = preset.source if preset else base_model
    if source.startswith(("builtin:", "/", ".", "~")) or Path(source).exists() or not REPO_RE.match(source) or "/" not in source:
        return None
    return source


@dataclass(frozen=True)
class LoadingRecipe:
    """A heading, a sentence to read first, and code to paste (`language`: python or bash)."""

    title: str
    note: str
    language: str
    code: str


def loading_recipe(*, base_model: str, trigger_word: str, weight_name: str, repo_id: str | None = None) -> LoadingRecipe:
    """How to generate with the LoRA file `weight_name`: in the current folder (as downloaded from
    the model page), or in the Hub repository `repo_id` (the model card's)."""
    prompt = f"a photo of {trigger_word}"  # a trigger word is [\w-]+: safe in Python and shell quotes
    preset = BASE_PRESETS.get(base_model)
    if preset is not None and preset.source.startswith("builtin:"):
        fetch = [f"hf download {repo_id} {weight_name} --local-dir ."] if repo_id else []
        return LoadingRecipe(
            title="Load it with FLUX Studio's engine",
            note=(f"The {base_model} base is built into FLUX Studio; it is not on the Hugging Face Hub, so diffusers "
                  "cannot load it by name. Run FLUX Studio's engine instead, in a checkout of FLUX Studio with the "
                  f"LoRA file there. About this base: {preset.description}"),
            language="bash",
            code="\n".join([*fetch, f'python -m trainer.engine generate --base {base_model} --lora {weight_name} '
                                    f'--prompt "{prompt}" --out {trigger_word}.png']),
        )
    hub_id = hub_base_model(base_model)
    if hub_id:
        note = (f"The base is {hub_id} on the Hugging Face Hub; if it is gated (FLUX.1 [dev] is), accept its "
                "license there and log in with `hf auth login` first.")
    else:
        note = f"This LoRA was trained on a local copy of a base ({base_model}), which is not named on the Hub: load your copy."
    if not repo_id:
        note += f" Download the diffusers file ({weight_name}) into the folder you run this from."
    defaults = defaults_for(base_model)  # as the generation page samples it (schnell: 4 steps, no guidance)
    code = [
        "import torch",
        "from diffusers import FluxPipeline",
        "",
        f'pipe = FluxPipeline.from_pretrained("{hub_id or base_model}", torch_dtype=torch.bfloat16).to("cuda")',
        f'pipe.load_lora_weights("{repo_id or "."}", weight_name="{weight_name}")',
        f'image = pipe("{prompt}", num_inference_steps={defaults.steps}, guidance_scale={defaults.guidance}).images[0]',
        f'image.save("{trigger_word}.png")',
    ]
    return LoadingRecipe(title="Load it with diffusers", note=note, language="python", code="\n".join(code))
