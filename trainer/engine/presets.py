"""Named base models and the defaults that belong to each of them.

A base trained at 64 px with 32 text tokens must be sampled that way too, so every preset carries
its own resolution, text length, sampling steps and guidance instead of the pipeline defaults.

Plain Python, no torch: the web process reads it too (trigger word advice looks for a base's
tokenizer files where `base_source` and `tiny_base_folder` say the engine keeps them).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .demo import WEIGHTS_DIR as DEMO_WEIGHTS_DIR

# A local diffusers folder may carry its own defaults in this file (the tiny and bench bases do),
# so that a base saved to disk samples the way it was built to, not at FLUX.1's 1024 px.
PRESET_FILE = "flux_studio_preset.json"


@dataclass(frozen=True)
class BasePreset:
    name: str
    source: str  # hub id, or "builtin:tiny" for the offline model built from configs
    resolution: int  # training and sampling side length in pixels
    max_sequence_length: int  # T5 tokens at inference (and the cap while training)
    sample_steps: int
    sample_guidance: float  # embedded guidance at inference (ignored by models without it)
    train_guidance: float  # embedded guidance value fed while training
    description: str


BASE_PRESETS: dict[str, BasePreset] = {
    "flux-dev": BasePreset(
        name="flux-dev",
        source="black-forest-labs/FLUX.1-dev",
        resolution=1024,
        max_sequence_length=512,
        sample_steps=28,
        sample_guidance=3.5,
        train_guidance=1.0,
        description="FLUX.1 [dev], gated on the Hugging Face hub (needs a token).",
    ),
    "flux-schnell": BasePreset(
        name="flux-schnell",
        source="black-forest-labs/FLUX.1-schnell",
        resolution=1024,
        max_sequence_length=256,
        sample_steps=4,
        sample_guidance=0.0,
        train_guidance=1.0,
        description="FLUX.1 [schnell], Apache-2.0, 4-step sampling, no guidance embedding.",
    ),
    "tiny": BasePreset(
        name="tiny",
        source="builtin:tiny",
        resolution=64,
        max_sequence_length=32,
        sample_steps=8,
        sample_guidance=3.5,
        train_guidance=1.0,
        description="A random FLUX-architecture model built offline, for tests: it trains in seconds, but it draws noise.",
    ),
    "demo": BasePreset(
        name="demo",
        source="builtin:demo",  # the folder trainer/engine/demo/weights, pretrained by `pretrain-demo`
        resolution=64,
        max_sequence_length=16,
        sample_steps=16,
        sample_guidance=1.0,  # the value fed while pretraining; the base is not guidance-distilled
        train_guidance=1.0,
        description="A small FLUX-architecture base pretrained here on procedural shapes; draws on a CPU.",
    ),
}


def preset_for(base: str) -> BasePreset:
    """The preset named `base` (or whose hub id it is), a folder's own preset file, or else the
    defaults of the FLUX.1 kind the base is: schnell's for a transformer without guidance embedding
    (read from a local folder or the hub cache; never the network), dev's otherwise."""
    if base in BASE_PRESETS:
        return BASE_PRESETS[base]
    preset_file = Path(base) / PRESET_FILE
    if preset_file.is_file():
        fields = json.loads(preset_file.read_text())
        fields.update(name=base, source=base)
        return BasePreset(**fields)
    by_source = {preset.source.lower(): preset for preset in BASE_PRESETS.values()}
    kind = by_source.get(base.lower()) or BASE_PRESETS["flux-schnell" if _without_guidance(base) else "flux-dev"]
    return replace(kind, name=base, source=base, description=f"FLUX.1 pipeline from {base}")


def _without_guidance(base: str) -> bool:
    """Whether the base's transformer config says it has no guidance embedding (schnell's kind);
    False when the config cannot be read without the network."""
    config = Path(base) / "transformer" / "config.json"
    if not config.is_file() and looks_like_hub_id(base):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(base, "transformer/config.json")
        except Exception:  # noqa: BLE001 - an odd id or cache: no answer, dev's defaults
            cached = None
        config = Path(cached) if isinstance(cached, str) else config
    try:
        return json.loads(config.read_text()).get("guidance_embeds", True) is False
    except (OSError, ValueError, AttributeError):
        return False


def write_preset_file(folder: Path, preset: BasePreset) -> None:
    """Record `preset`'s defaults next to a saved pipeline so `preset_for(folder)` finds them."""
    (Path(folder) / PRESET_FILE).write_text(json.dumps(asdict(preset), indent=2) + "\n")


def base_source(base: str) -> str:
    """Where `base`'s files are: a preset's hub id or shipped folder (the demo's weights), "builtin:tiny"
    for the base built in code, else `base` itself (a local diffusers folder or a hub id)."""
    preset = BASE_PRESETS.get(base)
    source = preset.source if preset else base
    return str(DEMO_WEIGHTS_DIR) if source == "builtin:demo" else source


def looks_like_hub_id(name: str) -> bool:
    """'org/name', not a path ('./x', '/x', '~/x')."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def tiny_base_folder(cache_dir: str | Path | None = None) -> Path:
    """Where `tiny.tiny_base_dir` saves the tiny base as a diffusers folder: in `cache_dir`, else
    $FLUX_STUDIO_CACHE, else ~/.cache/flux-studio."""
    root = Path(cache_dir or os.environ.get("FLUX_STUDIO_CACHE") or Path.home() / ".cache" / "flux-studio")
    return root / "tiny-base-v1"  # bump the suffix whenever TinySpec's defaults change
