"""The bridge from the engine to the job: `JobHooks` and the fence on every write it makes.

The engine knows nothing of Django; `JobHooks` turns its progress, samples, checkpoints and log
lines into database rows and live events, and answers its `should_stop()` polls. Separate from the
task body in `training_run.py`, which builds one per run and records how the run ended: these are
the writes made while the engine runs, each fenced on the worker that claimed the job (`mine`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from django.core.files import File
from django.db.models import QuerySet
from django.urls import reverse
from django.utils import timezone

from flux_studio import events, worker
from trainer import checkpoint_store
from trainer.jobs import publish_state
from trainer.models import JobState, TrainingJob, TrainingSample
from trainer.work_dirs import job_work_dir

log = logging.getLogger("trainer.worker")

PROGRESS_EVERY_S = 0.25  # live progress at most 4 times a second; losses are batched, never dropped
STOP_POLL_S = 0.5

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
        api_url = reverse("api:training_sample", args=[self.job.pk, sample.pk])  # for a token, not a session
        events.publish(self.job.topic, "sample", {"step": step, "prompt": prompt, "url": url, "api_url": api_url,
                                                  "id": sample.pk})

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
        # A new checkpoint is progress: the crash count (`attempts`, which fails a job that keeps
        # dying) starts over from this run, so a long job killed now and then over days is not failed.
        self.update(checkpoint_step=step, attempts=1)
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


def mine(job: TrainingJob, worker_id: str) -> QuerySet[TrainingJob]:
    """The job's row, only while it is running and held by `worker_id` (the fence of every write)."""
    return TrainingJob.objects.filter(pk=job.pk, worker_id=worker_id, state__in=RUNNING)
