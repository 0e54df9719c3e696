"""Resumable checkpoints: the adapter, optimizer, LR schedule, losses and step, in one folder.

Randomness needs no saving: every step draws its noise, timesteps and augmentations from a
generator seeded by (seed, step), so a resumed run sees exactly what the uninterrupted one did.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.pt"
# An exact resume replays the uninterrupted run, so every setting that decides what a step computes
# must be the checkpoint's. Only these may differ: `steps` (it may grow, to train further), where
# files live (a resumed job may land on another worker), the side jobs' schedules, and how memory
# is spent (checkpointing computes the same losses; low memory mode does too on a CPU, but on CUDA
# its 4-bit base does not, so a job that ran out of memory and resumes in it continues the run
# rather than replaying it exactly — worth it, since the alternative is no run at all). `compile`
# (and `cuda_graphs`) too: compiled kernels compute the same steps up to float rounding, so a run resumed with the
# other setting continues rather than replays bit for bit; likewise `fp8`, whose base rounds more coarsely. Everything else, including any setting
# added later, must match. A list of resolutions is one setting, compared after `resolve()` sorted
# it and dropped duplicates.
MAY_CHANGE = frozenset({
    "steps", "images_dir", "output_dir", "resume", "init_lora", "device", "memory_mode", "gradient_checkpointing",
    "compile", "cuda_graphs", "fp8", "sample_prompts", "sample_every", "sample_steps", "sample_guidance", "checkpoint_every",
    "keep_checkpoints", "val_every",
})  # fmt: skip


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


def dataset_fingerprint(examples: list[Any]) -> str:
    """What the dataset contributes to the steps: each example's file (name relative to its folder,
    and size), caption, bucket and resolution. The batch plan and every cached latent follow from
    these, so a resume onto other images or captions would not replay the run."""
    rows = [(e.image_path.name, e.image_path.stat().st_size, e.caption, list(e.bucket), e.resolution) for e in examples]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()[:16]


def load_checkpoint(path: Path, config: dict[str, Any], dataset: str | None = None) -> dict[str, Any]:
    """The saved state, after checking it was made by a compatible config and the same dataset."""
    try:
        # weights_only: tensors and plain containers, never code (a checkpoint comes back from storage)
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:  # unpickling: something other than data inside
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    check_resumable(path.name, state.get("config", {}), config, state.get("step", 0))
    if dataset and state.get("dataset") and state["dataset"] != dataset:  # checkpoints before the fingerprint: unchecked
        raise CheckpointError(
            f"cannot resume from {path.name}: the images or captions changed since it was saved (a photo added, removed "
            "or replaced, or a caption edited). An exact resume trains on the same dataset; put it back, or start a "
            "new run (to build on this one, start from its lora.safetensors with init_lora)."
        )
    return state


def check_resumable(name: str, saved: dict[str, Any], config: dict[str, Any], step: int) -> None:
    """Raise a CheckpointError naming each setting that differs from the checkpoint's.

    Keys the checkpoint does not record (written before a setting existed) are not compared.
    """
    changed = sorted(key for key in saved if key not in MAY_CHANGE and saved[key] != config.get(key))
    if changed:
        details = ", ".join(f"{k} {saved[k]!r} -> {config.get(k)!r}" for k in changed)
        raise CheckpointError(
            f"cannot resume from {name}: {details} changed since it was saved. An exact resume needs the same "
            "settings (only steps may grow); set them back, or start a new run."
        )
    if config.get("steps", step) < step:
        raise CheckpointError(f"cannot resume from {name}: it is at step {step}, beyond steps={config['steps']}")
