"""The body of the training task: claim a job, run the engine, record what happened.

Runs in the GPU worker only (it imports the engine, hence torch). The engine knows nothing of
Django; `JobHooks` is the bridge that turns its progress, samples, checkpoints and log lines
into database rows and live events, and answers its `should_stop()` polls.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone

from flux_studio import events, worker
from flux_studio.models import Event
from trainer import checkpoint_store, job_queue
from trainer.jobs import job_claim, publish_state
from trainer.models import FINAL_STATES, CaptionSource, JobState, TrainingJob, TrainingSample

log = logging.getLogger("trainer.worker")

PROGRESS_EVERY_S = 0.25  # live progress at most 4 times a second; losses are batched, never dropped
STOP_POLL_S = 0.5


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


def materialize_dataset(job: TrainingJob, folder: Path) -> Path:
    """Write the job's snapshot (images + .txt captions) where the engine reads it."""
    from django.core.files.storage import default_storage

    from trainer.selectors import snapshot_files

    folder.mkdir(parents=True, exist_ok=True)
    for name, stored, caption in snapshot_files(job.snapshot):
        target = folder / name
        if not target.exists():
            with default_storage.open(stored, "rb") as src, open(target, "wb") as dst:
                dst.write(src.read())
        target.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return folder


def engine_config(job: TrainingJob, work: Path, images: Path, *, resume: bool) -> dict[str, Any]:
    c = job.config
    init_lora = ""
    if job.parent_id and job.parent.lora_file:
        init_lora = str(fetch_file(job.parent.lora_file, work / "init" / "lora.safetensors"))
    return {
        "base": job.base_model,
        "images_dir": str(images),
        "output_dir": str(work / "out"),
        "trigger_word": job.trigger_word,
        "steps": job.total_steps,
        "learning_rate": c["learning_rate"],
        "lora_rank": c["lora_rank"],
        "resolution": c["resolution"],
        "batch_size": c["batch_size"],
        "seed": c["seed"],
        "caption_dropout": c.get("caption_dropout", 0.0),
        "memory_mode": c.get("memory_mode", "fast"),  # jobs launched before the setting existed: fast
        "compile": settings.TRAIN_COMPILE,  # the worker's choice: a resume elsewhere may differ
        "cuda_graphs": settings.TRAIN_COMPILE and settings.TRAIN_CUDA_GRAPHS,  # the same
        # the same; low mode's base is 4-bit, and a CPU worker would only run FP8's slow check path
        "fp8": settings.TRAIN_FP8 and c.get("memory_mode", "fast") == "fast" and _cuda_worker(),
        "sample_prompts": c.get("sample_prompts", []),
        "sample_every": c.get("sample_every", 0),
        "checkpoint_every": max(1, min(c.get("sample_every") or 50, 100)),
        "resume": resume,
        "init_lora": init_lora or None,
    }


def _cuda_worker() -> bool:
    import torch  # the worker's own process: it trains with torch anyway

    return torch.cuda.is_available()


def fetch_file(field: Any, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        with field.open("rb") as src, open(target, "wb") as dst:
            dst.write(src.read())
    return target


RUNNING = (JobState.STARTING, JobState.TRAINING)


class JobTakenOver(Exception):
    """The job's row no longer names this worker: recovery gave it to another one. Not a
    RuntimeError, so the engine lets it through and stops without writing a checkpoint."""


class JobHooks:
    """Engine hooks for one job (duck-typed to trainer.engine.TrainHooks).

    Every write is fenced on the worker id that claimed the job: if the heartbeat went stale
    (say a long database outage) and recovery handed the job to another worker, this one's next
    write matches no row, and the run stops instead of fighting over the job.
    """

    def __init__(self, job: TrainingJob) -> None:
        self.job = job
        self.worker_id = job.worker_id
        self.uploads = checkpoint_store.Uploader(job, job_work_dir(job) / "uploading")
        self.work_prefix = f"{job_work_dir(job)}{os.sep}"  # the worker's folders stay out of the job's log
        self.pending_losses: list[list[float]] = []
        self.last_seen: Any = None  # the engine's latest progress report
        self.last_progress = 0.0
        self.last_stop_poll = 0.0
        self.stop = False
        self.started = False

    def on_log(self, message: str) -> None:
        log.info("job %s: %s", self.job.pk, message)
        message = message.replace(self.work_prefix, "")  # "saved out/lora.safetensors", not this machine's path
        # Fenced too, but quietly: a line is no reason to stop, and the run's next fenced write
        # stops it anyway. A taken-over run must not add lines to the new run's log.
        if mine(self.job, self.worker_id).exists():
            events.publish(self.job.topic, "log", {"line": message})

    def on_progress(self, p: Any) -> None:
        self.collect_uploads()
        if not self.started:
            self.started = True
            self.update(state=JobState.TRAINING)
            self.job.state = JobState.TRAINING
            publish_state(self.job)
        self.pending_losses.append([p.step, float(p.loss)])
        self.last_seen = p
        now = time.monotonic()
        if now - self.last_progress < PROGRESS_EVERY_S and p.step < p.total_steps:
            return
        self.last_progress = now
        self._publish_progress(p)

    def flush_progress(self) -> None:
        """Send the losses still held back by the rate limit, so a run that stops (cancel, failure)
        shows its loss curve up to the last step it took."""
        if not self.pending_losses or self.last_seen is None:
            return
        try:  # best effort: the run is ending, and how it ends is recorded next whatever happens here
            self._publish_progress(self.last_seen)
        except Exception:
            log.warning("job %s: could not send its last losses", self.job.pk, exc_info=True)

    def _publish_progress(self, p: Any) -> None:
        self.update(step=p.step, loss=float(p.loss), it_per_s=float(p.it_per_s), eta_seconds=float(p.eta_s),
                    updated_at=timezone.now())
        events.publish(self.job.topic, "progress", {
            "step": p.step, "total": p.total_steps, "loss": float(p.loss), "lr": float(p.lr),
            "it_per_s": round(float(p.it_per_s), 3), "eta_s": round(float(p.eta_s), 1),
            "val_loss": getattr(p, "val_loss", None), "losses": self.pending_losses,
        })
        self.pending_losses = []

    def on_sample(self, step: int, prompt: str, path: Path) -> None:
        # Fenced like every write: a run that lost its job must not add images to the new run's page.
        self.check_held()
        with open(path, "rb") as fh:
            sample = TrainingSample(job=self.job, step=step, prompt=prompt)
            sample.image.save(Path(path).name, File(fh), save=True)
        url = reverse("trainer:job_sample", args=[self.job.pk, sample.pk])
        events.publish(self.job.topic, "sample", {"step": step, "prompt": prompt, "url": url, "id": sample.pk})

    def on_checkpoint(self, step: int, path: Path) -> None:
        # Storage first, then the row: `checkpoint_step` only ever names a checkpoint that any
        # worker can fetch. The copy runs in the background; `collect_uploads` names it once it
        # has landed. If storage fails, the older stored one stays the one to resume from.
        self.check_held()
        self.collect_uploads()
        self.uploads.submit(step, Path(path))

    def collect_uploads(self) -> None:
        """Record the newest checkpoint the uploader has stored, and say which copies failed."""
        for line in self.uploads.take_problems():
            self.on_log(line)
        step = self.uploads.take_landed()
        if step is None:
            return
        self.update(checkpoint_step=step)
        self.job.checkpoint_step = step
        self.uploads.prune_below(step)
        events.publish(self.job.topic, "checkpoint", {"step": step})

    def settle_uploads(self) -> None:
        """The run is ending: wait for the checkpoint being copied and record it, so that a
        resume on another machine finds it. Never raises: how the run ends is recorded next."""
        try:
            self.uploads.wait()
            self.collect_uploads()
        except JobTakenOver:
            pass  # the final write says so
        except Exception:
            log.warning("job %s: recording its stored checkpoint failed", self.job.pk, exc_info=True)
        self.uploads.close()

    def check_held(self) -> None:
        """Stop the run before a write that cannot be fenced in one update (a file, a new row)."""
        if not mine(self.job, self.worker_id).exists():
            raise JobTakenOver(f"job {self.job.pk} is no longer held by worker {self.worker_id}")

    def update(self, **fields: Any) -> None:
        """Write to the job's row while this worker still holds it; stop the run when it does not."""
        if not mine(self.job, self.worker_id).update(**fields):
            raise JobTakenOver(f"job {self.job.pk} is no longer held by worker {self.worker_id}")

    def should_stop(self) -> bool:
        # A shutdown stops the run at once, but the cancel flag is still read: a job canceled
        # while its worker stops must end 'canceled', not go back to the queue.
        shutting_down = worker.shutting_down.is_set()
        now = time.monotonic()
        if shutting_down or now - self.last_stop_poll >= STOP_POLL_S:
            self.last_stop_poll = now
            self.stop = self.stop or self.cancel_requested()
        return self.stop or shutting_down

    def cancel_requested(self) -> bool:
        return TrainingJob.objects.filter(pk=self.job.pk, cancel_requested=True).exists()


def checkpoint_here(job: TrainingJob, hooks: JobHooks, out: Path) -> bool:
    """Whether the engine can resume: the job's checkpoint is in this WORK_DIR, or fetched into it.

    A job resumed or recovered on another machine finds no local checkpoint; without the fetch it
    would start again at step 0 while its page said "resuming from step N".
    """
    from trainer.engine.checkpoint import checkpoint_root, latest_checkpoint

    latest = latest_checkpoint(out)
    local_step = int(latest.name.rsplit("-", 1)[1]) if latest else 0
    wanted = job.checkpoint_step
    if wanted > local_step:
        if checkpoint_store.fetch(job, wanted, checkpoint_root(out)) is not None:
            hooks.on_log(f"Fetched the checkpoint of step {wanted} from storage.")
            return True
        hooks.on_log(f"The checkpoint of step {wanted} is neither on this machine nor in storage: "
                     + (f"resuming from step {local_step} instead." if local_step else "starting again from step 0."))
    return latest is not None


def autocaption_first(job: TrainingJob, hooks: JobHooks) -> None:
    """Caption the dataset's uncaptioned photos, then freeze the captions again for this job.

    Photos the captioner cannot handle (or every photo, when no captioner weights load here)
    keep the trigger-word template caption; the log says which happened.
    """
    from trainer.captions import run_captioning
    from trainer.jobs import snapshot_of

    dataset = job.dataset
    if dataset is None:
        return
    todo = list(dataset.photos.filter(excluded=False, caption_source=CaptionSource.NONE).values_list("pk", flat=True))
    if todo:
        hooks.on_log(f"Captioning {len(todo)} photo(s) before training.")
        run_captioning(dataset_id=dataset.pk, photo_ids=todo, overwrite=False)
        outcome = Event.objects.filter(topic=dataset.topic, kind="captioning").order_by("-id").first()
        if outcome is not None and outcome.data.get("message"):
            hooks.on_log(outcome.data["message"])
    snapshot = snapshot_of(dataset, job.trigger_word) or job.snapshot
    config = {**job.config, "autocaptioned": True}
    # Fenced: captioning takes minutes, long enough for recovery to hand the job to another
    # worker, whose run must keep the snapshot it trains on.
    hooks.update(snapshot=snapshot, config=config)
    job.snapshot, job.config = snapshot, config


def mine(job: TrainingJob, worker_id: str) -> QuerySet[TrainingJob]:
    """The job's row, only while it is running and held by `worker_id` (the fence of every write)."""
    return TrainingJob.objects.filter(pk=job.pk, worker_id=worker_id, state__in=RUNNING)


def _finish(job: TrainingJob, state: str, message: str = "", **fields: Any) -> bool:
    held_by = job.worker_id
    if not mine(job, held_by).update(state=state, finished_at=timezone.now() if state != JobState.QUEUED else None, **fields):
        log.warning("job %s was taken over by another worker; not recording %s from %s", job.pk, state, held_by)
        return False
    job.refresh_from_db()
    publish_state(job, message)
    if state == JobState.QUEUED:
        job_queue.mark_enqueued(job)  # the caller re-enqueues it: back of the queue
    job_queue.publish_queue_positions()
    return True


def out_of_memory_hint(job: TrainingJob) -> str:
    """What the person can do next; the dataset and checkpoints stay, so a resume loses nothing."""
    if job.config.get("memory_mode", "fast") != "low":
        return ("Resume in low-memory mode (it continues from the last checkpoint), or launch again with a smaller "
                "resolution or batch size. The dataset and checkpoints are kept.")
    return ("Already in low-memory mode: launch again with a smaller resolution, batch size or LoRA rank. "
            "The dataset and checkpoints are kept.")


def _store_outputs(job: TrainingJob, result: Any) -> dict[str, Any]:
    stored = {}
    for field, path in (("lora_file", result.lora_path), ("kohya_file", result.kohya_path), ("config_file", result.config_path)):
        if path and Path(path).exists():
            if field == "config_file":
                shareable_config(Path(path))
            with open(path, "rb") as fh:
                getattr(job, field).save(Path(path).name, File(fh), save=False)
            stored[field] = getattr(job, field).name
    return stored


def shareable_config(path: Path) -> None:
    """Rewrite the run's config.yaml for the person who downloads it: this worker's folders give
    way to names they can use (`python -m trainer.engine train --config config.yaml --images
    DATASET_FOLDER --out OUT`), and the worker's own resume flag goes."""
    import yaml

    values = yaml.safe_load(path.read_text())
    values.update(images_dir="dataset", output_dir="out", resume=False)
    if values.get("init_lora"):
        values["init_lora"] = "parent/lora.safetensors"  # the LoRA this training continued from
    path.write_text(yaml.safe_dump(values, sort_keys=False, allow_unicode=True))


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


def _set_aside(folder: Path) -> Path | None:
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


def _discard(aside: Path | None) -> None:
    if aside is None:
        return
    try:
        shutil.rmtree(aside)
    except OSError as exc:
        if aside.exists():  # else another worker's sweep removed it meanwhile
            log.warning("could not remove %s (%s); the next worker start tries again", aside, exc)


def _finish_stopped(job: TrainingJob, state: str, message: str, **fields: Any) -> None:
    """Record a failure or cancel, and drop the job's local folder once storage holds its checkpoint.

    The folder is set aside while this worker still holds the job, so that a resume claimed right
    after the ending is recorded (here or by another worker on this machine) starts on a clean
    folder and fetches the checkpoint from storage.
    """
    folder, aside = job_work_dir(job), None
    try:
        only_here = unstored_checkpoint_step(job, folder) if folder.exists() else 0
        if only_here:
            log.info("job %s: keeping %s: its checkpoint of step %s is not in storage", job.pk, folder, only_here)
        elif folder.exists() and mine(job, job.worker_id).exists():
            aside = _set_aside(folder)
    except Exception:
        log.warning("job %s: could not decide whether to remove %s; left in place", job.pk, folder, exc_info=True)
    _finish(job, state, message, **fields)
    _discard(aside)


def remove_job_work_dir(job: TrainingJob) -> None:
    """Remove a finished job's local folder; a failure is logged (the next sweep retries)."""
    try:
        _discard(_set_aside(job_work_dir(job)))
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
                _discard(entry)
                removed.append(entry.name)
            elif entry.is_dir() and entry.name.isdigit() and _sweepable(int(entry.name), entry):
                aside = _set_aside(entry)
                if aside is not None and not _sweepable(int(entry.name), aside):
                    aside.rename(entry)  # resumed meanwhile: put it back for that run
                    continue
                _discard(aside)
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


def run_training(job_id: int) -> None:
    job = job_claim(job_id, worker.current_worker_id())
    if job is None:
        log.info("job %s is not queued (taken, canceled or gone); skipping", job_id)
        return
    worker.set_current_task(f"training job {job.pk}")
    publish_state(job, "Preparing the dataset and the base model.")
    try:
        _run_claimed(job)
    finally:
        worker.set_current_task("")


def _run_claimed(job: TrainingJob) -> None:
    from gallery.generation_run import release_pipeline_cache
    from trainer.engine.captioning import unload_captioners

    hooks = JobHooks(job)
    try:
        if job.config.get("autocaption") and not job.config.get("autocaptioned"):
            try:
                autocaption_first(job, hooks)
            except JobTakenOver as exc:
                log.warning("%s; stopping this run and leaving the job to its new worker", exc)
                return
            except Exception as exc:  # captions are a help, not a must: the template captions train
                log.exception("job %s: captioning before training failed", job.pk)
                hooks.on_log(f"Captioning failed ({exc}); training on the captions as they are.")
        # One GPU, one model in memory: drop the generation pipeline and any captioner before the
        # training loads its own base.
        release_pipeline_cache()
        unload_captioners()
        _train(job, hooks)
    finally:
        # Every ending below waits for its upload first; this only stops the uploader of a run that
        # lost its job or crashed on the way out, dropping what it had not begun to copy.
        hooks.uploads.close(discard=True)


def _train(job: TrainingJob, hooks: JobHooks) -> None:
    from trainer import engine  # torch and diffusers load here, in the worker only

    from trainer.jobs import snapshot_notes

    work = job_work_dir(job)
    if not job.checkpoint_step:  # said once, when the run starts from the beginning (not again on each resume)
        for note in snapshot_notes(job.snapshot, job.trigger_word):
            hooks.on_log(note)
    try:
        images = materialize_dataset(job, work / "dataset")
        resume = checkpoint_here(job, hooks, work / "out")
        config = engine.TrainConfig.from_dict(engine_config(job, work, images, resume=resume))
        result = engine.train(config, hooks)
    except JobTakenOver as exc:
        log.warning("%s; stopping this run and leaving the job to its new worker", exc)
        return
    except engine.EngineError as exc:
        hooks.flush_progress()
        hooks.settle_uploads()
        hint = getattr(exc, "hint", "") or ""
        if isinstance(exc, engine.OutOfMemoryError) and not hint:
            hint = out_of_memory_hint(job)
        log.warning("job %s failed: %s", job.pk, exc)
        _finish_stopped(job, JobState.FAILED, str(exc), error=str(exc), error_hint=hint[:300])
        return
    except Exception as exc:
        log.exception("job %s crashed", job.pk)
        hooks.flush_progress()
        hooks.settle_uploads()
        _finish_stopped(job, JobState.FAILED, "Internal error", error=f"Internal error: {type(exc).__name__}: {exc}",
                        error_hint="The dataset and checkpoints are kept; resume once the cause is fixed.")
        return
    hooks.flush_progress()
    hooks.settle_uploads()  # before the final state: a resume elsewhere must find the last checkpoint stored
    if result.canceled and worker.shutting_down.is_set() and not (hooks.stop or hooks.cancel_requested()):
        if _finish(job, JobState.QUEUED, f"Worker shutting down; will resume from step {result.final_step}.", worker_id=""):
            from trainer.tasks import train_job_task

            train_job_task(job.pk)
        return
    if result.canceled:
        kept = "checkpoint kept" if result.checkpoint_dir else "dataset kept"  # stopped while loading, before a first checkpoint
        _finish_stopped(job, JobState.CANCELED, f"Canceled at step {result.final_step}; {kept}.",
                        step=result.final_step)
        return
    stored = _store_outputs(job, result)
    if _finish(job, JobState.SUCCEEDED, "Training finished.", step=result.final_step, **stored):
        try:  # a finished job resumes no more ("continue" starts from its LoRA): free the space
            checkpoint_store.prune(job)
        except Exception:
            log.warning("job %s: removing its stored checkpoints failed", job.pk, exc_info=True)
        remove_job_work_dir(job)  # its outputs are stored: the local copies are of no more use
