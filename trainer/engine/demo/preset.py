"""The `demo` preset's defaults: what the shipped base was trained with (see pretrain.py).

presets.BASE_PRESETS["demo"] holds the same values (a test checks it); this copy is what
pretraining writes beside the weights, so the folder also works as a plain local-folder base.
"""

from __future__ import annotations

from ..presets import BasePreset

DEMO_PRESET = BasePreset(
    name="demo",
    source="builtin:demo",
    resolution=64,
    max_sequence_length=16,
    sample_steps=16,
    sample_guidance=1.0,  # the value fed while pretraining; the base is not guidance-distilled
    train_guidance=1.0,
    description="A small FLUX-architecture base pretrained here on procedural shapes; draws on a CPU.",
)
