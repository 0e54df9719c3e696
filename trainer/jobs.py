"""Writes for training jobs: create, enqueue, cancel, resume, continue, recover.

Every state change goes through here, as a compare-and-set update on `state`, so a web request
and a worker (or two workers) never both move the same job.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from flux_studio import events, worker
from flux_studio.files import delete_stored
from flux_studio.models import WorkerHeartbeat
from trainer import checkpoint_store, job_queue
from trainer.datasets import has_word, images_in_training_snapshots
from trainer.engine.config import resolution_sides, resolution_value
from trainer.models import ACTIVE_STATES, CaptionSource, Dataset, JobState, Photo, TrainingJob
from trainer.presets import LIMITS, MAX_RESOLUTIONS, MEMORY_MODES, PRESETS, preset_settings
from trainer.trigger_words import TRIGGER_CHARACTERS, TRIGGER_RE

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
MAX_SAMPLE_PROMPTS = 4  # each is drawn at every sample step, so they cost training time
SAMPLE_PROMPT_CHARS = 1000  # as a generation's prompt
SETTING_KEYS = ("steps", "learning_rate", "lora_rank", "batch_size", "resolution", "sample_every", "seed", "caption_dropout",
                "memory_mode")
CHOICES = {"memory_mode": tuple(MEMORY_MODES)}


def clean_settings(*, preset: str, base_model: str, overrides: dict[str, Any], sample_prompts: list[str]) -> dict[str, Any]:
    """Preset values with the person's explicit settings on top, checked against LIMITS."""
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValidationError({"preset": f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}"})
    if not isinstance(base_model, str) or base_model not in settings.BASE_MODELS:
        raise ValidationError({"base_model": f"{base_model!r} is not offered here; choose one of {', '.join(settings.BASE_MODELS)}"})
    unknown = set(overrides) - set(SETTING_KEYS)
    if unknown:
        raise ValidationError({"settings": f"unknown setting(s): {', '.join(sorted(unknown))}"})
    values = preset_settings(preset, base_model)
    errors = {}
    for key, raw in overrides.items():
        if raw in (None, ""):
            continue
        try:
            values[key] = clean_resolution(raw) if key == "resolution" else _clean_value(key, raw, values[key])
        except ValueError as exc:
            errors[key] = str(exc)
    if errors:
        raise ValidationError(errors)
    values["sample_prompts"] = _clean_sample_prompts(sample_prompts)
    return values


def _clean_sample_prompts(prompts: list[str]) -> list[str]:
    """Blank lines dropped; too many or too long is an error, not a silent cut."""
    cleaned = [p.strip() for p in prompts if isinstance(p, str) and p.strip()]
    if len(cleaned) != len([p for p in prompts if not isinstance(p, str) or p.strip()]):
        raise ValidationError({"sample_prompts": "each sample prompt must be text"})
    if len(cleaned) > MAX_SAMPLE_PROMPTS:
        raise ValidationError({"sample_prompts": f"at most {MAX_SAMPLE_PROMPTS} sample prompts (got {len(cleaned)}); "
                                                 "each is drawn at every sample step"})
    long = [i + 1 for i, p in enumerate(cleaned) if len(p) > SAMPLE_PROMPT_CHARS]
    if long:
        raise ValidationError({"sample_prompts": f"sample prompt {long[0]} has more than {SAMPLE_PROMPT_CHARS} characters"})
    return cleaned


def clean_resolution(raw: Any) -> int | list[int]:
    """"1024", 1024, 1024.0, "512, 768, 1024" or [512, 768, 1024]: each within LIMITS and a multiple of 16.

    Sorted without duplicates; a single size stays a plain int, as before lists were allowed.
    """
    sides = resolution_sides(raw)  # ValueError names a part that is not a whole number of pixels
    low, high = LIMITS["resolution"]
    if len(sides) > MAX_RESOLUTIONS:
        raise ValueError(f"at most {MAX_RESOLUTIONS} sizes (each one adds a copy of every photo to train on)")
    for side in sides:
        if not low <= side <= high:
            raise ValueError(f"{side} must be between {low} and {high}")
        if side % 16:
            raise ValueError(f"{side} must be a multiple of 16")
    return resolution_value(sides)


def _clean_value(key: str, raw: Any, default: Any) -> Any:
    """One explicit setting, as the type of the preset's value; ValueError says what is wrong."""
    if key in CHOICES:
        if not isinstance(raw, str) or raw not in CHOICES[key]:
            raise ValueError(f"{raw!r} is not one of {', '.join(CHOICES[key])}")
        return raw
    kind = float if isinstance(default, float) else int
    if isinstance(raw, bool) or (kind is int and isinstance(raw, float) and not raw.is_integer()):
        raise ValueError(f"{raw!r} is not a whole number" if kind is int else f"{raw!r} is not a number")
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{raw!r} is not a whole number" if kind is int else f"{raw!r} is not a number") from None
    low, high = LIMITS[key]
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high}")
    return value


FILLED_TEMPLATE, FILLED_TRIGGER = "template", "trigger"  # what a snapshot row's `filled` says was done


def snapshot_of(dataset: Dataset, trigger: str) -> list[dict[str, Any]]:
    """The photos and captions as they will be trained; every caption carries the trigger.

    A row whose caption the studio wrote says so in `filled`: the template for a photo without a
    caption, or the trigger word put in front of a caption that lacked it (the job's log says how
    many of each when training starts).
    """
    rows = []
    for photo in dataset.photos.filter(excluded=False).order_by("id"):
        caption, filled = photo.caption.strip(), None
        if photo.caption_source == CaptionSource.NONE or not caption:
            caption, filled = f"a photo of {trigger}", FILLED_TEMPLATE
        elif not has_word(caption, trigger):  # as a whole word, as the engine checks it
            caption, filled = f"{trigger}, {caption}", FILLED_TRIGGER
        rows.append({"photo_id": photo.pk, "image": photo.image.name, "caption": caption,
                     **({"filled": filled} if filled else {})})
    return rows


def snapshot_notes(snapshot: list[dict[str, Any]], trigger: str) -> list[str]:
    """What the studio wrote into a snapshot's captions, in words for the job's log."""
    template = sum(row.get("filled") == FILLED_TEMPLATE for row in snapshot)
    prefixed = sum(row.get("filled") == FILLED_TRIGGER for row in snapshot)
    notes = []
    if template:
        notes.append(f"{template} of {len(snapshot)} photos have no caption: they train as \"a photo of {trigger}\".")
    if prefixed:
        notes.append(f"{prefixed} of {len(snapshot)} captions lack the trigger word: they train with \"{trigger}, \" in front.")
    return notes


def launch_check(
    *, trigger: str, preset: str = "balanced", base_model: str | None = None, overrides: dict[str, Any] | None = None,
    sample_prompts: list[str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """job_create's checks that need no photos: a trigger word, the preset, base and settings.

    The base model and the checked settings. The API runs it before storing the photos a request
    sends, so that a refused launch stores nothing.
    """
    if not trigger:
        raise ValidationError({"trigger_word": "pick a trigger word before training"})
    if not TRIGGER_RE.match(trigger):  # the web form checks the same; the API sends any string
        raise ValidationError({"trigger_word": f"{trigger!r} cannot be a trigger word. {TRIGGER_CHARACTERS}"})
    base = base_model or settings.DEFAULT_BASE_MODEL
    prompts = sample_prompts if sample_prompts is not None else [f"a photo of {trigger}"]
    return base, clean_settings(preset=preset, base_model=base, overrides=overrides or {}, sample_prompts=prompts)


def job_create(
    *, owner: AbstractBaseUser, dataset: Dataset, preset: str = "balanced", base_model: str | None = None,
    overrides: dict[str, Any] | None = None, sample_prompts: list[str] | None = None, name: str = "",
    autocaption: bool = False,
) -> TrainingJob:
    """Freeze a dataset and settings into a queued job and enqueue it after commit.

    With `autocaption`, the worker first captions the photos that have no caption, then freezes
    the captions again, all in the same GPU task (one request for an API client).
    """
    if dataset.owner_id != owner.pk:
        raise PermissionError("not your dataset")
    trigger = dataset.trigger_word.strip()
    base, values = launch_check(trigger=trigger, preset=preset, base_model=base_model, overrides=overrides,
                                sample_prompts=sample_prompts)
    snapshot = snapshot_of(dataset, trigger)
    if not snapshot:
        raise ValidationError({"dataset": "the dataset has no photos to train on (all are excluded or none were uploaded)"})
    with transaction.atomic():
        job = TrainingJob.objects.create(
            owner=owner, dataset=dataset, name=name or f"{dataset.name} · {trigger}", base_model=base,
            trigger_word=trigger, config={"preset": preset, **values, "autocaption": autocaption}, snapshot=snapshot,
            total_steps=values["steps"],
        )
        job_enqueue(job)
    return job


def job_enqueue(job: TrainingJob) -> None:
    """Queue the GPU task once the row that it reads is committed."""
    from trainer.tasks import train_job_task

    job_queue.mark_enqueued(job)
    transaction.on_commit(lambda: (train_job_task(job.pk), job_queue.publish_queue_positions()))


def publish_state(job: TrainingJob, message: str = "") -> None:
    events.publish(job.topic, "state", {
        "state": job.state, "step": job.step, "total": job.total_steps, "error": job.error,
        "error_hint": job.error_hint, "message": message,
    })


def job_cancel(*, job: TrainingJob) -> bool:
    """Ask a job to stop. A queued job stops at once; a running one within one step."""
    updated = TrainingJob.objects.filter(pk=job.pk, state=JobState.QUEUED).update(
        state=JobState.CANCELED, cancel_requested=True, finished_at=timezone.now()
    )
    if updated:
        _close_requeued_run(job.pk)
        job.refresh_from_db()
        publish_state(job, "Canceled before it started.")
        transaction.on_commit(job_queue.publish_queue_positions)
        return True
    updated = TrainingJob.objects.filter(pk=job.pk, state__in=ACTIVE_STATES).update(cancel_requested=True)
    if updated:
        events.publish(job.topic, "log", {"line": "Cancel requested; stopping after the current step."})
    return bool(updated)


def job_resume(*, job: TrainingJob, memory_mode: str | None = None) -> TrainingJob:
    """Resume a canceled or failed job from its last checkpoint (same job, step count goes on).

    `memory_mode` may switch a job that ran out of memory to "low": the adapter and optimizer
    state carry over (the engine checks the other settings did not change); on CUDA the 4-bit base
    makes the continued run close to, not exactly, what the uninterrupted one would have been.
    """
    if memory_mode is not None and (not isinstance(memory_mode, str) or memory_mode not in MEMORY_MODES):
        raise ValidationError({"memory_mode": f"{memory_mode!r} is not one of {', '.join(MEMORY_MODES)}"})
    with transaction.atomic():
        job.refresh_from_db(fields=["finished_at", "run_started_at"])
        updated = TrainingJob.objects.filter(pk=job.pk, state__in=(JobState.CANCELED, JobState.FAILED)).update(
            state=JobState.QUEUED, cancel_requested=False, error="", error_hint="", finished_at=None, attempts=0,
            step=F("checkpoint_step"),  # where the next run starts: the steps after the checkpoint are trained again
            # the run that ended at finished_at joins the job's run time; the wait from here does not
            ran_seconds=F("ran_seconds") + _run_seconds(job.run_started_at, job.finished_at), run_started_at=None,
        )
        if not updated:
            raise ValidationError("only a canceled or failed job can be resumed")
        job.refresh_from_db()
        mode = ""
        if memory_mode and memory_mode != job.config.get("memory_mode", "fast"):
            job.config = {**job.config, "memory_mode": memory_mode}
            job.save(update_fields=["config"])
            mode = f" in {memory_mode} memory mode"
        start = f"Resuming from step {job.checkpoint_step}" if job.checkpoint_step else "Running again from the start"
        publish_state(job, f"{start}{mode}.")
        job_enqueue(job)
    return job


def job_continue(*, job: TrainingJob, extra_steps: int) -> TrainingJob:
    """Train a finished LoRA further as a new job that starts from its weights."""
    low, high = LIMITS["steps"]
    if not low <= extra_steps <= high:
        raise ValidationError({"steps": f"must be between {low} and {high}"})
    with transaction.atomic():
        # locked as job_delete locks it: a delete at the same moment either sees this child, or
        # this finds the job gone
        job = TrainingJob.objects.select_for_update().filter(pk=job.pk).first()
        if job is None or job.state != JobState.SUCCEEDED:
            raise ValidationError("only a finished job can be continued")
        child = TrainingJob.objects.create(
            owner=job.owner, dataset=job.dataset, name=f"{job.name} (+{extra_steps})", base_model=job.base_model,
            trigger_word=job.trigger_word, config={**job.config, "steps": extra_steps}, snapshot=job.snapshot,
            total_steps=extra_steps, parent=job,
        )
        job_enqueue(child)
    return child


def job_delete(*, job: TrainingJob) -> None:
    """Delete a finished (succeeded, failed or canceled) training with its files.

    Refused while it runs or waits (cancel it first), while its gallery model is published
    (other people may be using it: unpublish first), and while a continuation that has not
    succeeded yet still needs its weights to start from. A private gallery draft goes with it.
    Files go once the delete has committed: the LoRA, kohya and config files, samples, the
    draft's example images, stored checkpoints, and photo files only this training still kept
    (photos deleted from their dataset after it was launched).
    """
    from gallery.models import GalleryModel  # trainer does not depend on gallery at import time

    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.state in ACTIVE_STATES:
            raise ValidationError(f"this training is still {job.state}: cancel it first, then delete it once it has stopped")
        model = GalleryModel.objects.filter(training=job).first()
        if model is not None and model.published:
            raise ValidationError(f"this training is published in the gallery as model {model.pk}, where others may use "
                                  "it; unpublish it first")
        waiting = list(job.continuations.exclude(state=JobState.SUCCEEDED).values_list("pk", flat=True))
        if waiting:
            if len(waiting) == 1:
                raise ValidationError(f"training #{waiting[0]} continues from this one's weights and has not "
                                      "finished: delete it or let it finish first")
            raise ValidationError(f"trainings {', '.join(f'#{pk}' for pk in waiting)} continue from this one's "
                                  "weights and have not finished: delete them or let them finish first")
        files = [getattr(job, name) for name in ("lora_file", "kohya_file", "config_file")]
        files += [sample.image for sample in job.samples.all()]
        if model is not None:
            for example in model.examples.all():
                files += [example.image, example.thumbnail]
        snapshot_images = {row.get("image", "") for row in job.snapshot or [] if isinstance(row, dict)} - {""}
        owner_id, deleted = job.owner_id, TrainingJob(pk=job.pk, owner_id=job.owner_id)
        job.delete()  # samples, the gallery draft and its examples cascade
        transaction.on_commit(lambda: _delete_job_files(deleted, owner_id, files, snapshot_images))


def _delete_job_files(job: TrainingJob, owner_id: int, files: list, snapshot_images: set[str]) -> None:
    delete_stored(files)
    try:
        checkpoint_store.prune(job)
    except (NotImplementedError, OSError):
        log.warning("could not remove the stored checkpoints of training %s", job.pk, exc_info=True)
    # Photo files the training's snapshot kept after their photos were deleted: nobody needs them
    # now, unless a photo still uses the file or another training (a continuation) names it.
    in_use = set(Photo.objects.filter(image__in=snapshot_images).values_list("image", flat=True))
    orphans = snapshot_images - in_use - images_in_training_snapshots(owner_id)
    if orphans:
        from django.core.files.storage import default_storage

        for name in orphans:
            try:
                default_storage.delete(name)
            except OSError:
                log.warning("could not delete %s", name, exc_info=True)


def job_claim(job_id: int, worker_id: str) -> TrainingJob | None:
    """Compare-and-set: only a queued, not-canceled job moves to 'starting', for one worker."""
    claimed = TrainingJob.objects.filter(pk=job_id, state=JobState.QUEUED, cancel_requested=False).update(
        state=JobState.STARTING, worker_id=worker_id, attempts=F("attempts") + 1, updated_at=timezone.now()
    )
    if not claimed:
        # A queued job whose cancel came in while no worker held it ends here, not in the queue.
        if TrainingJob.objects.filter(pk=job_id, state=JobState.QUEUED, cancel_requested=True).update(
            state=JobState.CANCELED, finished_at=timezone.now()
        ):
            _close_requeued_run(job_id)
            publish_state(TrainingJob.objects.get(pk=job_id), "Canceled before it started.")
        return None
    job = TrainingJob.objects.get(pk=job_id)
    # A run starts. The one before it was closed when the job went back to the queue (run_closed) or
    # was resumed; a run still open here is from a row queued before run times were kept, and
    # ended when it rejoined the queue (enqueued_at). started_at stays the first.
    job.ran_seconds += _run_seconds(job.run_started_at, job.enqueued_at)
    job.run_started_at = timezone.now()
    job.started_at = job.started_at or job.run_started_at
    TrainingJob.objects.filter(pk=job_id).update(
        ran_seconds=job.ran_seconds, run_started_at=job.run_started_at, started_at=job.started_at)
    job_queue.publish_queue_positions()  # everyone behind it moves up
    return job


def _run_seconds(start: datetime | None, end: datetime | None) -> float:
    """The length of a run that went from `start` to `end`; 0 when either is unknown."""
    return max(0.0, (end - start).total_seconds()) if start and end else 0.0


def run_closed(job: TrainingJob) -> dict[str, Any]:
    """The fields that end the job's current run now, for the update that sends it back to the
    queue (worker shutdown or death): its seconds join `ran_seconds`, and the wait that follows is
    not run time, whatever happens before it is claimed again (a cancel, a long queue). Its step
    goes back to the checkpoint the next run starts from, as the pages then show."""
    return {"ran_seconds": F("ran_seconds") + _run_seconds(job.run_started_at, timezone.now()), "run_started_at": None,
            "step": F("checkpoint_step")}


def _close_requeued_run(job_id: int) -> None:
    """A job canceled while it waited: a run still open (a row queued before run times were kept)
    ended when it rejoined the queue, not now (the wait is not run time)."""
    job = TrainingJob.objects.only("run_started_at", "enqueued_at", "ran_seconds").get(pk=job_id)
    if job.run_started_at is not None:
        TrainingJob.objects.filter(pk=job_id, run_started_at=job.run_started_at).update(
            ran_seconds=F("ran_seconds") + _run_seconds(job.run_started_at, job.enqueued_at), run_started_at=None)


def recover_orphaned_jobs() -> list[int]:
    """Jobs left 'starting'/'training' by a dead worker: re-queue from the checkpoint, or fail."""
    recovered = []
    for job in TrainingJob.objects.filter(state__in=(JobState.STARTING, JobState.TRAINING)):
        if not worker.is_dead(job.worker_id):
            continue
        if job.cancel_requested:  # the person asked it to stop: keep the checkpoint, do not re-run
            done = TrainingJob.objects.filter(pk=job.pk, state=job.state, worker_id=job.worker_id).update(
                state=JobState.CANCELED, finished_at=timezone.now(), worker_id="",
                step=F("checkpoint_step"),  # the steps after it died with the worker: a resume starts there
            )
        elif job.attempts >= MAX_ATTEMPTS:
            done = TrainingJob.objects.filter(pk=job.pk, state=job.state, worker_id=job.worker_id).update(
                state=JobState.FAILED, finished_at=timezone.now(),
                step=F("checkpoint_step"),  # what is kept: a resume starts there
                error=f"The worker running this job stopped {job.attempts} times in a row (killed or out of memory) "
                      "without reaching a new checkpoint.",
                error_hint="Try the low-memory mode, fewer photos, or a smaller resolution.",
            )
        else:
            done = TrainingJob.objects.filter(pk=job.pk, state=job.state, worker_id=job.worker_id).update(
                state=JobState.QUEUED, worker_id="", **run_closed(job)
            )
        if done:
            job.refresh_from_db()
            message = {
                JobState.QUEUED: f"The worker stopped unexpectedly; resuming from step {job.checkpoint_step}.",
                JobState.CANCELED: f"Canceled; the worker stopped before it could say so. Checkpoint at step {job.checkpoint_step} kept.",
            }.get(job.state, job.error)
            log.warning("job %s: %s", job.pk, message)
            publish_state(job, message)
            if job.state == JobState.QUEUED:
                from trainer.tasks import train_job_task

                job_queue.mark_enqueued(job)  # Huey puts it at the back of the queue
                train_job_task(job.pk)
            recovered.append(job.pk)
    if recovered:
        job_queue.publish_queue_positions()
    WorkerHeartbeat.objects.filter(last_seen__lt=timezone.now() - timezone.timedelta(hours=1)).delete()
    return recovered
