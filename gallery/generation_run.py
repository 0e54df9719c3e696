"""The body of the generation task, in the GPU worker: claim, generate, store, report.

The worker keeps one `PipelineCache` for its lifetime, so the base model loads once and each
request only swaps LoRAs. `GenerationProgress` bridges the engine's hooks to database rows and
live events (topic generation-<id>), and answers its stop polls from the cancel flag.

How a run ends: succeeded, failed (with the reason), canceled by its owner, or, when the worker
stops cleanly (Ctrl-C, SIGTERM), back in the queue to run again when a worker starts (a studio
shutdown is not a cancel). A row deleted while it runs (its owner's account) ends the run
quietly, its files removed. Every write is fenced on the claim (`_claimed`): running, by this
worker's heartbeat row.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from flux_studio import events, worker
from flux_studio.files import delete_stored
from gallery import selectors, services
from gallery.imaging import png_file, thumbnail_file
from gallery.lora_cache import local_lora_path
from gallery.models import Generation, GenerationImage, GenerationState
from trainer.models import TrainingJob

log = logging.getLogger("gallery.worker")

PROGRESS_EVERY_S = 0.2
STOP_POLL_S = 0.5
_cache: Any = None


def pipeline_cache() -> Any:
    """The worker's cache (created on first use; torch loads here, in the worker only)."""
    global _cache
    if _cache is None:
        from gallery.inference.cache import PipelineCache

        _cache = PipelineCache(device=getattr(settings, "GENERATION_DEVICE", "auto"))
    return _cache


def release_pipeline_cache() -> None:
    """Free the cached base, e.g. before a training needs the GPU memory on a small card."""
    if _cache is not None:
        _cache.release()


class GenerationGone(Exception):
    """The generation's row was deleted, or is no longer this run's, while it ran: stop quietly."""


def _claimed(generation: Generation) -> Any:
    """The generation's row while this run still holds it (running, by the worker that claimed it)."""
    return Generation.objects.filter(pk=generation.pk, state=GenerationState.RUNNING,
                                     worker_heartbeat=generation.worker_heartbeat)


def _lora_gone(row: dict) -> str:
    what = f"gallery model {row['id']}" if row.get("kind") == "gallery" else f"training {row['training_id']}"
    if row.get("kind") == "gallery":
        what += f" of training {row['training_id']}"
    label = row.get("label")
    return f"{label} ({what})" if label else what


def build_request(generation: Generation) -> Any:
    from gallery.inference import GenerationRequest, LoraSpec, RequestError
    from gallery.defaults import defaults_for

    # Each LoRA as the owner may use it now, not as when it was queued: a training deleted since
    # (a gallery model's training goes with it), or another person's model unpublished since, is
    # said plainly, not run (nor a KeyError).
    usable = [selectors.usable_lora(generation.owner, row["kind"], row["id"]) for row in generation.loras]
    gone = [row for row, found in zip(generation.loras, usable) if found is None]
    if gone:
        names = "; ".join(_lora_gone(row) for row in gone)
        one = len(gone) == 1
        raise RequestError(f"{'a LoRA' if one else 'LoRAs'} it uses {'was' if one else 'were'} deleted or unpublished "
                           f"since it was queued: {names}; generate again without {'it' if one else 'them'}")
    loras = tuple(LoraSpec(local_lora_path(job), float(row["scale"])) for row, (job, _) in zip(generation.loras, usable))  # type: ignore[misc]
    return GenerationRequest(
        base=generation.base_model, prompt=generation.prompt, seed=generation.seed, steps=generation.steps,
        guidance=generation.guidance, width=generation.width, height=generation.height,
        max_sequence_length=defaults_for(generation.base_model).max_sequence_length,
        num_images=generation.num_images, loras=loras,
    )


class GenerationProgress:
    """Engine hooks for one generation (duck-typed to gallery.inference.cache.GenerationHooks)."""

    def __init__(self, generation: Generation) -> None:
        self.generation = generation
        self.last_progress = 0.0
        self.last_poll = 0.0
        self.stop = False

    def on_step(self, image_index: int, step: int, total_steps: int) -> None:
        now = time.monotonic()
        if now - self.last_progress < PROGRESS_EVERY_S and step < total_steps:
            return
        self.last_progress = now
        g = self.generation
        done = image_index * total_steps + step
        if done < total_steps * g.num_images:  # the last step is stored with the final state
            Generation.objects.filter(pk=g.pk).update(step=done)
        events.publish(g.topic, "progress", {
            "image": image_index, "step": step, "steps": total_steps, "done": done, "total": total_steps * g.num_images,
        })

    def on_image(self, image_index: int, seed: int, image: Any) -> None:
        g = self.generation
        row = GenerationImage(generation=g, index=image_index, seed=seed)
        row.image.save(f"{g.pk}-{image_index}.png", png_file(image), save=False)
        row.thumbnail.save(f"{g.pk}-{image_index}.jpg", thumbnail_file(image), save=False)
        try:
            with transaction.atomic():  # the row only while the run holds the generation
                if not _claimed(g).select_for_update().exists():
                    raise GenerationGone(f"generation {g.pk} was deleted or taken while it ran")
                row.save()
        except GenerationGone:  # deleted or taken meanwhile: no orphan files
            delete_stored([row.image, row.thumbnail])
            raise
        except IntegrityError as exc:  # deleted between the check and the insert
            delete_stored([row.image, row.thumbnail])
            raise GenerationGone(f"generation {g.pk} was deleted while it ran") from exc
        events.publish(g.topic, "image", image_payload(row))

    def should_stop(self) -> bool:
        """A cancel, a worker shutdown (`_run_claimed` tells them apart), or the row gone or taken."""
        if worker.shutting_down.is_set():
            return True
        now = time.monotonic()
        if now - self.last_poll >= STOP_POLL_S:
            self.last_poll = now
            self.stop = not _claimed(self.generation).filter(cancel_requested=False).exists()
        return self.stop


def image_payload(row: GenerationImage) -> dict[str, Any]:
    url = reverse("gallery:generation_image", args=[row.generation_id, row.pk])
    return {"id": row.pk, "index": row.index, "seed": row.seed, "url": url,
            "thumb_url": url + "?size=thumb", "download_url": url + "?download=1",
            "api_url": reverse("api:prediction_image", args=[row.generation_id, row.index])}  # for a token


def _finish(generation: Generation, state: str, message: str = "", error: str = "", step: int | None = None) -> None:
    """Record the end (if still running) and tell the page: one update, no re-read when it applied."""
    changes: dict[str, Any] = {"state": state, "error": error, "finished_at": timezone.now()}
    if step is not None:
        changes["step"] = step
    with transaction.atomic():  # the row and its state event together, as for trainings
        if Generation.objects.filter(pk=generation.pk, state=GenerationState.RUNNING).update(**changes):
            for name, value in changes.items():
                setattr(generation, name, value)
        else:  # canceled or taken meanwhile: report what the row says
            try:
                generation.refresh_from_db()
            except Generation.DoesNotExist:  # deleted meanwhile: nobody to tell
                log.info("generation %s was deleted while it ran; not recording %s", generation.pk, state)
                return
        services.publish_state(generation, message)


STUDIO_STOPPED = "The studio stopped while generating; it will generate again when the studio starts."


def _requeue(generation: Generation) -> bool:
    """A clean worker stop (Ctrl-C, SIGTERM) is not the owner's cancel: the generation goes back
    to the queue, ahead of those queued after it, and runs again from its first image (the same
    seeds, so the same images) when a worker starts, as a queued one does and as trainings resume.
    Fenced on the claim, and only when no cancel is pending; False when it was not requeued."""
    with transaction.atomic():
        images = list(GenerationImage.objects.filter(generation_id=generation.pk))
        if not _claimed(generation).filter(cancel_requested=False).update(
                state=GenerationState.QUEUED, step=0, started_at=None, finished_at=None, error="", worker_heartbeat=None):
            return False
        # The images made so far are made again, under the same indices: this run's copies go.
        GenerationImage.objects.filter(pk__in=[image.pk for image in images]).delete()
        files = [field for image in images for field in (image.image, image.thumbnail)]
        transaction.on_commit(lambda: delete_stored(files))
        generation.refresh_from_db()
        services.publish_state(generation, STUDIO_STOPPED, images_dropped=bool(images))

        def enqueue() -> None:
            from gallery.tasks import GENERATION_PRIORITY, generate_images_task

            # It was created before any generation queued meanwhile, and the queue's positions
            # count by creation: it runs first.
            generate_images_task(generation.pk, priority=GENERATION_PRIORITY + 1)
            services.publish_queue_positions()

        transaction.on_commit(enqueue)
    log.info("generation %s: the worker is stopping; back in the queue", generation.pk)
    return True


def run_generation(generation_id: int) -> None:
    claimed = Generation.objects.filter(pk=generation_id, state=GenerationState.QUEUED, cancel_requested=False).update(
        state=GenerationState.RUNNING, started_at=timezone.now(), step=0, worker_heartbeat=worker.current_heartbeat()
    )
    if not claimed:
        log.info("generation %s is not queued (canceled, taken or gone); skipping", generation_id)
        return
    generation = Generation.objects.get(pk=generation_id)
    services.publish_state(generation, "Loading the model." if _cache is None else "Generating.")
    services.publish_queue_positions()
    worker.set_current_task(f"generation {generation.pk}")
    try:
        _run_claimed(generation)
    finally:
        worker.set_current_task("")


def _run_claimed(generation: Generation) -> None:
    from gallery.inference import GenerationCanceled, RequestError
    from trainer.engine.errors import EngineError

    hooks = GenerationProgress(generation)
    try:
        pipeline_cache().generate(build_request(generation), hooks)
    except GenerationGone as exc:
        log.info("%s; stopping", exc)
    except GenerationCanceled:
        if worker.shutting_down.is_set() and _requeue(generation):
            return
        _finish(generation, GenerationState.CANCELED, "Canceled.")
    except (RequestError, EngineError) as exc:
        log.warning("generation %s failed: %s", generation.pk, exc)
        _finish(generation, GenerationState.FAILED, str(exc), error=str(exc))
    except Exception as exc:
        log.exception("generation %s crashed", generation.pk)
        _finish(generation, GenerationState.FAILED, "Internal error", error=f"Internal error: {type(exc).__name__}: {exc}")
    else:
        _finish(generation, GenerationState.SUCCEEDED, "Done.", step=generation.steps * generation.num_images)
        if generation.state == GenerationState.SUCCEEDED:
            services.generation_count_uses(generation)


WORKER_STOPPED = "The worker stopped while generating (killed, or out of memory). Generate again."


def recover_orphaned_generations() -> list[int]:
    """Generations left running by a worker that died: failed with the reason, so the page, the
    queue estimate and the API's event stream stop waiting for them. A generation is seconds of
    work: generating again is the recovery."""
    ended = []
    for generation in Generation.objects.filter(state=GenerationState.RUNNING, worker_heartbeat__isnull=False):
        if not worker.heartbeat_is_dead(generation.worker_heartbeat):
            continue
        with transaction.atomic():
            if not Generation.objects.filter(pk=generation.pk, state=GenerationState.RUNNING,
                                             worker_heartbeat=generation.worker_heartbeat).update(
                    state=GenerationState.FAILED, error=WORKER_STOPPED, finished_at=timezone.now()):
                continue
            generation.refresh_from_db()
            services.publish_state(generation, WORKER_STOPPED)
        log.warning("generation %s: its worker stopped; failed", generation.pk)
        ended.append(generation.pk)
    return ended
