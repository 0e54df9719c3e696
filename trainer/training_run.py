"""The body of the training task: claim a job, run the engine, record what happened.

Runs in the GPU worker only (it imports the engine, hence torch). This module holds the task's
steps in order: prepare the run (the dataset copy, the engine config, a checkpoint fetched from
storage, captions written first), call the engine, and record how the run ended (the final state,
the stored outputs). The engine knows nothing of Django; `JobHooks` (in `job_hooks.py`) is the
bridge it reports through while it runs, and the job's local folder is handled in `work_dirs.py`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from flux_studio import worker
from flux_studio.models import Event
from trainer import checkpoint_store, job_queue
from trainer.job_hooks import JobHooks, JobTakenOver, mine
from trainer.jobs import job_claim, publish_state, run_closed
from trainer.models import CaptionSource, JobState, TrainingJob
from trainer.work_dirs import (
    PhotoFilesMissing,
    discard,
    fetch_file,
    job_work_dir,
    materialize_dataset,
    remove_job_work_dir,
    set_aside,
    unstored_checkpoint_step,
)
from trainer.work_dirs import sweep_work_dirs  # noqa: F401  (re-exported: trainer/tasks.py imports it from here)

log = logging.getLogger("trainer.worker")


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


def _finish(job: TrainingJob, state: str, message: str = "", **fields: Any) -> bool:
    held_by = job.worker_id
    if state == JobState.QUEUED:  # back to the queue: this run ends now, the wait is not run time
        fields.update(run_closed(job))
    # The row and its state event commit together: a client that sees the final state (an event
    # stream's 204) has the event too.
    with transaction.atomic():
        if not mine(job, held_by).update(state=state, finished_at=timezone.now() if state != JobState.QUEUED else None,
                                         **fields):
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
            aside = set_aside(folder)
    except Exception:
        log.warning("job %s: could not decide whether to remove %s; left in place", job.pk, folder, exc_info=True)
    _finish(job, state, message, **fields)
    discard(aside)


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
    except PhotoFilesMissing as exc:
        hooks.flush_progress()
        hooks.settle_uploads()
        log.warning("job %s failed: %s", job.pk, exc)
        _finish_stopped(job, JobState.FAILED, str(exc), error=str(exc), error_hint=PhotoFilesMissing.hint)
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
        # A clean stop is not one of the crashes `attempts` counts (the claim counted this run)
        if _finish(job, JobState.QUEUED, f"Worker shutting down; will resume from step {result.final_step}.", worker_id="",
                   attempts=Greatest(F("attempts") - 1, 0)):
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
