"""The job's scratch folder on this machine: what goes into it, and when and how it is removed.

A training run works in a local folder (the dataset copy, the engine's output and checkpoints);
storage holds what is kept. Separate from the task body in `training_run.py` because the folder
outlives a run: a resume on this machine reuses it, and a sweep at worker start (and every 10
minutes) removes the ones no run needs any more, whichever job they belonged to.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings

from trainer import checkpoint_store
from trainer.models import FINAL_STATES, JobState, TrainingJob

log = logging.getLogger("trainer.worker")


def jobs_work_root() -> Path:
    return settings.WORK_DIR / "jobs"


def job_work_dir(job: TrainingJob) -> Path:
    """The job's scratch folder on this machine: the dataset copy, the engine's output and checkpoints.

    Only a cache: what a person keeps (photos, captions, samples, the LoRA files) and the latest
    checkpoint are in storage. It is removed when the job succeeds, when it fails or is canceled
    with its latest checkpoint stored, and by the sweep a GPU worker runs when it starts and every
    10 minutes.
    """
    return jobs_work_root() / str(job.pk)


# A folder being removed is first renamed to this prefix (one atomic step), so that neither a run
# of its job nor a resume on this machine ever sees half of it; the sweep (at start, then every 10
# minutes) removes any left behind by a worker killed mid-removal.
SET_ASIDE = ".removing-"


class PhotoFilesMissing(Exception):
    """Stored photo files of a job's snapshot are gone (storage lost them): str() names them by
    their names in the dataset, never by a storage path."""

    hint = ("A training keeps the photos it was launched with, and these cannot be put back into it. Remove them "
            "from the dataset or upload them again, then launch a new training.")


def materialize_dataset(job: TrainingJob, folder: Path) -> Path:
    """Write the job's snapshot (images + .txt captions) where the engine reads it."""
    from django.core.files.storage import default_storage

    from trainer.models import Photo
    from trainer.selectors import snapshot_files

    folder.mkdir(parents=True, exist_ok=True)
    missing: list[tuple[str, object]] = []
    for (name, stored, caption), row in zip(snapshot_files(job.snapshot), job.snapshot):
        target = folder / name
        if not target.exists():
            try:
                with default_storage.open(stored, "rb") as src:
                    data = src.read()
            except FileNotFoundError:
                missing.append((name, row.get("photo_id") if isinstance(row, dict) else None))
                continue
            target.write_bytes(data)
        target.with_suffix(".txt").write_text(caption, encoding="utf-8")
    if missing:
        ids = [pk for _, pk in missing if isinstance(pk, int)]
        names = dict(Photo.objects.filter(pk__in=ids).values_list("pk", "original_name"))
        shown = [names.get(pk, name) if isinstance(pk, int) else name for name, pk in missing]  # type: ignore[call-overload]
        more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
        raise PhotoFilesMissing(f"{len(missing)} of this training's photo files are missing from storage: "
                                f"{', '.join(shown[:5])}{more}.")
    return folder


def fetch_file(field: Any, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        with field.open("rb") as src, open(target, "wb") as dst:
            dst.write(src.read())
    return target


def unstored_checkpoint_step(job: TrainingJob, folder: Path) -> int:
    """The step of the checkpoint a resume on this machine would start from, when storage lacks it; else 0.

    A resume anywhere else fetches the one the row names (`checkpoint_step`, named only once its
    copy has landed in storage). A newer local one (its copy failed, or the run was killed before
    naming it), or a local one whose stored copy is missing, exists only here: the folder is kept.
    """
    from trainer.engine.checkpoint import latest_checkpoint  # torch: in the worker only

    latest = latest_checkpoint(folder / "out")
    if latest is None:
        return 0
    local_step = int(latest.name.rsplit("-", 1)[1])
    if local_step <= job.checkpoint_step and checkpoint_store.stored(job, job.checkpoint_step):
        return 0
    return local_step


def set_aside(folder: Path) -> Path | None:
    """Rename `folder` out of the way for removal; None when it is not there or cannot be moved."""
    aside = folder.with_name(f"{SET_ASIDE}{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        folder.rename(aside)
    except FileNotFoundError:
        return None
    except OSError:
        log.warning("could not set %s aside for removal; left in place", folder, exc_info=True)
        return None
    return aside


def discard(aside: Path | None) -> None:
    if aside is None:
        return
    try:
        shutil.rmtree(aside)
    except OSError as exc:
        if aside.exists():  # else another worker's sweep removed it meanwhile
            log.warning("could not remove %s (%s); the next worker start tries again", aside, exc)


def remove_job_work_dir(job: TrainingJob) -> None:
    """Remove a finished job's local folder; a failure is logged (the next sweep retries)."""
    try:
        discard(set_aside(job_work_dir(job)))
    except Exception:
        log.warning("job %s: removing its work folder failed", job.pk, exc_info=True)


def sweep_work_dirs() -> list[str]:
    """Remove the work folders that no run needs any more, left by earlier runs on this machine.

    A folder goes when its job succeeded, no longer exists, or failed or was canceled with its
    latest checkpoint stored; also what a worker killed mid-removal left set aside. A queued,
    starting or training job's folder is never touched: another worker process on this machine
    may be using it, or will resume from it. Anything else (names that are no job's) stays too.
    Returns the names removed.
    """
    root = jobs_work_root()
    if not root.is_dir():
        return []
    removed = []
    for entry in sorted(root.iterdir()):
        try:
            if entry.name.startswith(SET_ASIDE):
                discard(entry)
                removed.append(entry.name)
            elif entry.is_dir() and entry.name.isdigit() and _sweepable(int(entry.name), entry):
                aside = set_aside(entry)
                if aside is not None and not _sweepable(int(entry.name), aside):
                    aside.rename(entry)  # resumed meanwhile: put it back for that run
                    continue
                discard(aside)
                if aside is not None:
                    removed.append(entry.name)
        except Exception:
            log.warning("sweeping %s failed; left in place", entry, exc_info=True)
    if removed:
        log.info("removed %d leftover work folder(s) from %s", len(removed), root)
    return removed


def _sweepable(pk: int, folder: Path) -> bool:
    job = TrainingJob.objects.filter(pk=pk).first()
    if job is None:
        return True
    if job.state not in FINAL_STATES:
        return False
    return job.state == JobState.SUCCEEDED or not unstored_checkpoint_step(job, folder)
