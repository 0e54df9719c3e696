"""Huey tasks of the trainer. Bodies live in services; a task only names what runs where."""

from __future__ import annotations

from huey import crontab

from flux_studio import worker
from flux_studio.queues import gpu_queue, light_queue
from trainer.captions import caption_dataset_task, sweep_caption_copies  # noqa: F401  (the worker registers the task from here)


@gpu_queue.task()
def train_job_task(job_id: int) -> None:
    from trainer.training_run import run_training

    run_training(job_id)


@light_queue.periodic_task(crontab(minute="*"))
def recover_orphaned_jobs_task() -> None:
    from trainer.jobs import recover_orphaned_jobs

    recover_orphaned_jobs()


@worker.on_worker_start
def _recover_on_start() -> None:
    from trainer.jobs import recover_orphaned_jobs

    recover_orphaned_jobs()


@worker.housekeeping(every=600)  # its first round comes after the start hooks: a job recovered just now keeps its folder
def _sweep_work_dirs() -> None:
    from trainer.training_run import sweep_work_dirs

    sweep_work_dirs()  # finished, deleted or orphaned jobs' local folders (photo copies, checkpoints)


@worker.housekeeping(every=3600)
def _sweep_caption_copies() -> None:
    sweep_caption_copies()  # photo copies a killed captioning left (6 hours old)
