"""Training presets a person picks from, and the limits on explicit settings.

Plain data, no torch: the web side validates and explains settings, the engine applies them.
Steps scale with the base model: the `tiny` CPU base trains in seconds, FLUX.1 needs thousands.
"""

from __future__ import annotations

from dataclasses import dataclass

# Torch-free: the engine's one parser of the resolution setting, so the studio reads it the same way.
from trainer.engine.config import resolution_sides


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    explanation: str  # may name the settings on a base ("{steps:,}", "{lora_rank}"): see preset_summary
    steps: int
    learning_rate: float
    lora_rank: int
    batch_size: int


PRESETS: dict[str, Preset] = {
    "fast": Preset("fast", "Fast", "Few steps at a high learning rate: a quick first look at whether the concept is picked up.", 500, 1e-3, 8, 1),
    "balanced": Preset("balanced", "Balanced", "The usual choice for a pet, a person or an object: {steps:,} steps at rank {lora_rank}.", 1000, 4e-4, 16, 1),
    "high": Preset("high", "High quality", "More steps, a lower learning rate and a larger rank: finer detail, slower, for 20+ photos.", 2000, 2e-4, 32, 1),
}

# The CPU bases learn in seconds, so their presets are scaled down to keep the demo snappy.
CPU_STEP_SCALE = {"tiny": 0.06, "demo": 0.2}
DEFAULT_RESOLUTION = {"tiny": 64, "demo": 64}
FLUX_RESOLUTION = 1024

# How the engine spends GPU memory (trainer/engine/config.py MEMORY_MODES). A job that ran out of
# memory may resume from its checkpoint in "low": the adapter and optimizer carry over, but on
# CUDA the 4-bit base computes slightly different losses, so that resume continues the run rather
# than replaying it exactly (on a CPU both modes compute the same losses). What each costs in time:
# LOW_MEMORY_STEP_FACTOR below.
MEMORY_MODES = {
    "fast": "Fast: everything on the GPU in bf16",
    "low": "Low memory: gradient checkpointing, one text encoder at a time and a 4-bit base on CUDA (slower)",
}

LIMITS = {
    "steps": (1, 20000),
    "learning_rate": (1e-6, 1e-2),
    "lora_rank": (1, 128),
    "batch_size": (1, 16),
    "resolution": (32, 2048),  # each of them, when several
    "sample_every": (0, 5000),
    "seed": (0, 2**32 - 1),  # as a generation's (gallery.defaults.LIMITS); a training keeps it in its JSON config
    "caption_dropout": (0.0, 0.5),
}

# Several resolutions train every photo at each (ai-toolkit's `resolution: [512, 768, 1024]`).
MAX_RESOLUTIONS = 4


# How the job page names a setting changed from its preset.
SETTING_NAMES = {"steps": "steps", "learning_rate": "learning rate", "lora_rank": "rank", "batch_size": "batch size",
                 "resolution": "resolution", "sample_every": "sample interval", "seed": "seed",
                 "caption_dropout": "caption dropout"}


def changed_from_preset(config: dict, base_model: str) -> list[str]:
    """The settings of a job's config that differ from its preset's values on its base, by name
    (empty for an unknown preset: nothing to compare with)."""
    if config.get("preset") not in PRESETS:
        return []
    defaults = preset_settings(config["preset"], base_model)
    return [label for key, label in SETTING_NAMES.items() if key in config and config[key] != defaults.get(key)]


def resolution_text(value: int | list[int] | None) -> str:
    """'1024' or '512, 768, 1024', as the launch form takes it and the job page shows it ('' for none)."""
    return ", ".join(str(side) for side in resolution_sides(value)) if value else ""


def preset_settings(preset: str, base_model: str) -> dict:
    """Concrete settings for a preset on a base model."""
    p = PRESETS[preset]
    scale = CPU_STEP_SCALE.get(base_model, 1.0)
    steps = max(20, int(p.steps * scale))
    return {
        "steps": steps,
        "learning_rate": p.learning_rate,
        "lora_rank": p.lora_rank,
        "batch_size": p.batch_size,
        "resolution": DEFAULT_RESOLUTION.get(base_model, FLUX_RESOLUTION),
        "sample_every": max(10, steps // 4),
        "seed": 42,
        "caption_dropout": 0.05,
        "memory_mode": "fast",
    }


# FLUX.1-dev, rank 16, batch 1, the worker's defaults (eager, fast mode), on an H200: 0.32 s a step
# at 512², 0.50 at 1024² (a fixed part plus one growing with the area; bench/README-train.md).
FLUX_STEP_S = (0.26, 0.24)  # seconds per step: fixed, per (side / 1024)²
# The CPU bases at 64² in fast mode: a round figure; the engine's bare steps took 0.01-0.06 s there
# (measurement below), the rest is left for validation, samples and checkpoints.
CPU_STEP_S = 0.1
# A low memory step over a fast one with the same settings, measured on each kind of machine:
# - "gpu": gradient checkpointing, the 4-bit NF4 base and 8-bit AdamW. FLUX.1-dev at 1024² on an
#   H200: 0.953 s against 0.498 (bench/results/h200-2026-11-26.jsonl), 1.91x. Low mode was not
#   timed at 512² with the current precision; an H100 before it took 2.6x fast's step there
#   (0.832 / 0.318 s, bench/results/h100-2026-11-25.jsonl), so small sizes may run longer still.
# - "cpu": on a CPU only gradient checkpointing differs (fp32 in both modes; offloading to the CPU
#   moves nothing). The engine on the demo and tiny bases at 64², 6 photos, 80-150 steps, fast and
#   low interleaved, 7 rounds each, one thread on a shared 2-core CPU (2026-11-26): median step
#   1.95x (demo) and 1.88x (tiny) fast's, geometric mean of all 14 rounds 2.01x (range 1.55-3.0).
#   Loading and encoding took the same in both modes (1-2 s), so only the steps are scaled.
LOW_MEMORY_STEP_FACTOR = {"gpu": 1.9, "cpu": 2.0}


def estimate_seconds(settings: dict, base_model: str, photo_count: int) -> int:
    """A rough time estimate shown before launch (measured on a CPU for tiny, an H200 for FLUX).

    With several resolutions each step trains a batch at one of them, so a step costs the mean of
    their costs (which grow with the area), and every photo is encoded once per resolution.
    """
    sides = resolution_sides(settings["resolution"])
    on_cpu = base_model in CPU_STEP_SCALE
    fixed, per_area = FLUX_STEP_S
    per_step = CPU_STEP_S if on_cpu else sum(fixed + per_area * (side / 1024) ** 2 for side in sides) / len(sides)
    if settings.get("memory_mode") == "low":
        per_step *= LOW_MEMORY_STEP_FACTOR["cpu" if on_cpu else "gpu"]
    warmup = 10 * len(sides) if on_cpu else 90 + photo_count * len(sides)
    return int(warmup + settings["steps"] * settings["batch_size"] * per_step)


def duration_text(seconds: float) -> str:
    """'40 s', '12 min' or '1 h 5 min': an estimate read at a glance."""
    whole = round(seconds)
    if whole < 120:
        return f"{whole} s"
    minutes = round(whole / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def preset_summary(preset: str, base_model: str, photo_count: int) -> dict[str, str | dict[str, str]]:
    """What the launch page says of a preset on a base: its explanation and its figures.

    Both come from preset_settings for that base, so the words and the numbers agree whichever
    base is chosen (the CPU bases scale the steps down). The figures end with the time estimate,
    which depends on the memory mode and names it: `figures_by_memory_mode` holds them for each
    mode (the page swaps them when the mode changes), `figures` those of the presets' own mode.
    """
    values = preset_settings(preset, base_model)
    settings_text = (f"{values['steps']:,} steps · rank {values['lora_rank']} · lr {values['learning_rate']:g} · "
                     f"{resolution_text(values['resolution'])} px")
    by_mode = {}
    for mode in MEMORY_MODES:
        eta = estimate_seconds({**values, "memory_mode": mode}, base_model, photo_count)
        by_mode[mode] = f"{settings_text} · about {duration_text(eta)} ({mode} memory mode)"
    return {
        "explanation": PRESETS[preset].explanation.format(**values),
        "figures": by_mode[values["memory_mode"]],
        "figures_by_memory_mode": by_mode,
    }
