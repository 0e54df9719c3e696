"""Resumable checkpoints: the adapter, optimizer, LR schedule, losses and step, in one folder.

Randomness needs no saving: every step draws its noise, timesteps and augmentations from a
generator seeded by (seed, step), so a resumed run sees exactly what the uninterrupted one did.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.pt"
# Settings a resumed run must share with the checkpoint, or its losses would mean something else.
MUST_MATCH = ("base", "lora_rank", "lora_alpha", "lora_targets", "batch_size", "grad_accum", "seed", "resolution")


def checkpoint_root(output_dir: Path) -> Path:
    return output_dir / CHECKPOINTS


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, if any (partial writes are never named step-*)."""
    root = checkpoint_root(output_dir)
    found = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file()) if root.is_dir() else []
    return found[-1] if found else None


def save_checkpoint(
    output_dir: Path, step: int, state: dict[str, Any], keep: int, write_extra: Callable[[Path], None]
) -> Path:
    """Write into a temporary folder and rename it, so a kill mid-write leaves no broken checkpoint.

    `write_extra(folder)` adds files next to the state (the loadable lora.safetensors).
    """
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:06d}"
    partial = root / f".partial-{step:06d}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    torch.save({**state, "step": step}, partial / STATE_FILE)
    write_extra(partial)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The saved state, after checking it was made by a compatible config."""
    try:
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    saved = state.get("config", {})
    changed = [key for key in MUST_MATCH if saved.get(key) != config.get(key)]
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise CheckpointError(f"cannot resume from {path.name}: settings changed ({details})")
    return state
