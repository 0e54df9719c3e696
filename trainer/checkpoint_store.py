"""A job's latest checkpoint, kept in the studio's storage as well as in the worker's WORK_DIR.

The engine writes checkpoints to the local WORK_DIR of the machine that trains. Scaled out, a
resumed or recovered job may land on another GPU machine, whose WORK_DIR has none of them: it
would silently start again at step 0. So each checkpoint the engine writes is copied to storage
(local media or S3), replacing the previous one, and a worker that lacks the job's checkpoint
fetches it before the engine looks.

The copy runs on a thread of its own (`Uploader`), since a FLUX checkpoint (LoRA and optimizer
state) is hundreds of MB and training must not wait on storage. The thread touches no database:
the training thread records `checkpoint_step` once a copy has landed, fenced like its other writes.

Layout: users/<owner>/checkpoints/job-<pk>/step-<NNNNNN>/<the engine's files>. The worker side
only; no torch here, the engine's folder conventions are passed in.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
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


def prune(job: TrainingJob, below: int | None = None) -> None:
    """Delete the job's stored checkpoints older than step `below` (all of them when None).

    Newer ones stay: the uploader may already have copied a later checkpoint than the one the
    database names, and that one is the next to be named.
    """
    for folder in _stored_steps(job):
        if below is not None and folder >= step_name(below):  # zero-padded: names sort as steps
            continue
        prefix = f"{job_prefix(job)}/{folder}"
        for name in default_storage.listdir(prefix)[1]:
            default_storage.delete(f"{prefix}/{name}")
        _remove_empty_folder(prefix)
    if below is None:  # all of them: the job's own folder goes too (local storage keeps it, empty)
        _remove_empty_folder(job_prefix(job))


def stored(job: TrainingJob, step: int) -> bool:
    """Whether storage holds the checkpoint of `step`, the one `fetch` would download."""
    if step <= 0:
        return False
    try:
        return bool(default_storage.listdir(f"{job_prefix(job)}/{step_name(step)}")[1])
    except FileNotFoundError:
        return False


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


class Uploader:
    """Copies one run's checkpoints to storage on a background thread, the newest first.

    Latest wins: a checkpoint that arrives while another is being copied waits, and replaces any
    that was waiting already, since only the newest one is worth resuming from. Each checkpoint
    is hard-linked into `staging` when it arrives (instant), so the engine removing its older
    checkpoints cannot pull files from under a copy in progress.

    The training thread calls `submit`, then collects what `take_landed` and `take_problems`
    return; nothing here raises into the run.
    """

    def __init__(self, job: TrainingJob, staging: Path) -> None:
        self.job = job
        self.staging = staging
        shutil.rmtree(staging, ignore_errors=True)  # left by an earlier run on this machine
        self._lock = threading.Condition()
        self._waiting: tuple[int, Path] | None = None
        self._prune_below: int | None = None
        self._busy = self._closing = False
        self._landed: int | None = None
        self._problems: list[str] = []
        self._thread: threading.Thread | None = None

    def submit(self, step: int, folder: Path) -> None:
        try:
            staged = self._stage(step, folder)
        except OSError as exc:  # a full disk, say: the checkpoint is on this machine, just not stored
            log.warning("job %s: staging the checkpoint of step %s failed", self.job.pk, step, exc_info=True)
            self._report(step, exc)
            return
        with self._lock:
            superseded, self._waiting = self._waiting, (step, staged)
            self._wake()
        if superseded is not None:
            log.info("job %s: checkpoint of step %s superseded before its upload began", self.job.pk, superseded[0])
            shutil.rmtree(superseded[1], ignore_errors=True)

    def prune_below(self, step: int) -> None:
        """Remove older stored checkpoints once the database names the one of `step`."""
        with self._lock:
            self._prune_below = max(step, self._prune_below or 0)
            self._wake()

    def take_landed(self) -> int | None:
        """The newest step stored since the last call, if any."""
        with self._lock:
            landed, self._landed = self._landed, None
        return landed

    def take_problems(self) -> list[str]:
        with self._lock:
            problems, self._problems = self._problems, []
        return problems

    def wait(self) -> None:
        """Block until the waiting checkpoint (if any) is stored or has failed."""
        with self._lock:
            while self._waiting is not None or self._busy:
                self._lock.wait()

    def close(self, *, discard: bool = False) -> None:
        """Finish the queued work (or drop the waiting upload with `discard`) and stop the thread."""
        with self._lock:
            if discard and self._waiting is not None:
                shutil.rmtree(self._waiting[1], ignore_errors=True)
                self._waiting = self._prune_below = None
            self._closing = True
            self._lock.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        shutil.rmtree(self.staging, ignore_errors=True)

    def _wake(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"checkpoint-upload-{self.job.pk}", daemon=True)
            self._thread.start()
        self._lock.notify_all()

    def _stage(self, step: int, folder: Path) -> Path:
        staged = self.staging / step_name(step)
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        for path in (p for p in folder.iterdir() if p.is_file()):
            try:
                os.link(path, staged / path.name)
            except OSError:  # no hard links across devices or on this filesystem: a plain copy
                shutil.copyfile(path, staged / path.name)
        return staged

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._waiting is None and self._prune_below is None and not self._closing:
                    self._lock.wait()
                upload, self._waiting = self._waiting, None
                below, self._prune_below = self._prune_below, None
                if upload is None and below is None:
                    return  # closing, nothing left to do
                self._busy = True
            try:
                if below is not None:
                    self._prune(below)
                if upload is not None:
                    self._upload(*upload)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _upload(self, step: int, staged: Path) -> None:
        try:
            upload(self.job, step, staged)
        except Exception as exc:
            log.warning("job %s: storing the checkpoint of step %s failed", self.job.pk, step, exc_info=True)
            self._report(step, exc)
            return
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        with self._lock:
            self._landed = max(step, self._landed or 0)

    def _report(self, step: int, exc: Exception) -> None:
        with self._lock:
            self._problems.append(f"The checkpoint of step {step} could not be copied to storage ({exc}); "
                                  "only this machine has it.")

    def _prune(self, below: int) -> None:
        try:
            prune(self.job, below=below)
        except Exception:
            log.warning("job %s: removing older stored checkpoints failed", self.job.pk, exc_info=True)
