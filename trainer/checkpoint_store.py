"""A job's latest checkpoint, kept in the studio's storage as well as in the worker's WORK_DIR.

The engine writes checkpoints to the local WORK_DIR of the machine that trains. Scaled out, a
resumed or recovered job may land on another GPU machine, whose WORK_DIR has none of them: it
would silently start again at step 0. So each checkpoint the engine writes is copied to storage
(local media or S3), replacing the previous one, and a worker that lacks the job's checkpoint
fetches it before the engine looks.

Layout: users/<owner>/checkpoints/job-<pk>/step-<NNNNNN>/<the engine's files>. The worker side
only; no torch here, the engine's folder conventions are passed in.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage

from trainer.models import TrainingJob

log = logging.getLogger("trainer.worker")


def job_prefix(job: TrainingJob) -> str:
    return f"users/{job.owner_id}/checkpoints/job-{job.pk}"


def step_name(step: int) -> str:
    return f"step-{step:06d}"  # the engine's checkpoint folder name


def upload(job: TrainingJob, step: int, folder: Path) -> None:
    """Copy one checkpoint folder to storage (each file overwritten if there already)."""
    prefix = f"{job_prefix(job)}/{step_name(step)}"
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        name = f"{prefix}/{path.name}"
        if default_storage.exists(name):
            default_storage.delete(name)
        with open(path, "rb") as fh:
            saved = default_storage.save(name, File(fh))
        if saved != name:  # a storage that renames would break the fetch; say so loudly
            raise RuntimeError(f"storage saved {name} as {saved}")


def prune(job: TrainingJob, keep_step: int | None = None) -> None:
    """Delete the job's stored checkpoints except `keep_step` (all of them when None)."""
    keep = step_name(keep_step) if keep_step is not None else None
    for folder in _stored_steps(job):
        if folder == keep:
            continue
        prefix = f"{job_prefix(job)}/{folder}"
        for name in default_storage.listdir(prefix)[1]:
            default_storage.delete(f"{prefix}/{name}")
        _remove_empty_folder(prefix)


def fetch(job: TrainingJob, step: int, checkpoints_dir: Path) -> Path | None:
    """Download the stored checkpoint of `step` into `checkpoints_dir`; None when storage lacks it.

    Written to a hidden folder and renamed, so a worker killed mid-download leaves nothing the
    engine would take for a complete checkpoint.
    """
    prefix = f"{job_prefix(job)}/{step_name(step)}"
    try:
        names = default_storage.listdir(prefix)[1]
    except FileNotFoundError:
        return None
    if not names:
        return None
    partial = checkpoints_dir / f".fetch-{step_name(step)}"
    final = checkpoints_dir / step_name(step)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in names:
        with default_storage.open(f"{prefix}/{name}", "rb") as src, open(partial / name, "wb") as dst:
            shutil.copyfileobj(src, dst, length=4 << 20)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def _stored_steps(job: TrainingJob) -> list[str]:
    try:
        return [d for d in default_storage.listdir(job_prefix(job))[0] if d.startswith("step-")]
    except FileNotFoundError:
        return []


def _remove_empty_folder(prefix: str) -> None:
    """Local storage keeps empty folders (S3 has none); drop them so only live checkpoints list."""
    try:
        Path(default_storage.path(prefix)).rmdir()
    except (NotImplementedError, OSError):
        pass
