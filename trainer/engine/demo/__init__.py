"""The demo base: a small FLUX-architecture model that really draws simple scenes.

- scenes.py: procedural captioned scenes, and the LoRA concept (a pink/teal checkerboard).
- build.py: the untrained pipeline (word-level tokenizers, 4x VAE, neighbour-biased T5).
- pretrain.py: `python -m trainer.engine pretrain-demo`, VAE then transformer, seeded, on a CPU.
- fidelity.py: the image metrics that tests and bench/demo_fidelity.py share.
- weights/: the shipped result (fp16 safetensors), loaded by the `demo` preset.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
