"""Writes for generations: create (validate, enqueue on commit), cancel, delete, queue notices.

Web requests and the API call these; they never import torch. The GPU work is the
`generate_images_task` task, whose body is `gallery.generation_run.run_generation`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from flux_studio import events
from flux_studio.files import delete_stored
from gallery import selectors
from gallery.defaults import LIMITS
from gallery.models import GalleryModel, Generation, GenerationState
from trainer.models import JobState, TrainingJob


@dataclass(frozen=True)
class LoraChoice:
    kind: str  # "training" or "gallery"
    id: int
    scale: float = 1.0


def _check_range(errors: dict[str, str], name: str, value: float) -> None:
    low, high = LIMITS[name]
    if not low <= value <= high:
        errors[name] = f"must be between {low} and {high}"


def _check_size(errors: dict[str, str], width: int, height: int) -> None:
    for side in (width, height):
        if not 16 <= side <= 2048 or side % 16:
            errors["size"] = f"width and height must be multiples of 16 between 16 and 2048, got {width}x{height}"


def _unusable(owner: AbstractBaseUser, choice: LoraChoice) -> str:
    """Why a LoRA cannot be used: the caller's own training that has no LoRA yet is named with its
    state; anything else (missing, private, unpublished) gets one answer, so ids tell nothing."""
    if choice.kind == "training":
        state = TrainingJob.objects.filter(pk=choice.id, owner=owner).values_list("state", flat=True).first()
        if state is not None:
            return (f"training {choice.id} has no finished LoRA (it is {state}); use a training that succeeded"
                    if state != JobState.SUCCEEDED else f"training {choice.id} kept no LoRA file")
        return f"training {choice.id} does not exist or is not yours"
    return f"model {choice.id} does not exist or is not published"


def _resolve_loras(owner: AbstractBaseUser, loras: list[LoraChoice], base_model: str, errors: dict[str, str]) -> list[dict]:
    """The LoRAs as stored on the generation, or an error for any the person may not use."""
    low, high = LIMITS["loras"]
    if len(loras) > high:
        errors["loras"] = f"at most {high} LoRAs at once"
        return []
    rows, seen = [], set()
    for choice in loras:
        found = selectors.usable_lora(owner, choice.kind, choice.id)
        if found is None:
            errors["loras"] = _unusable(owner, choice)
            return []
        job, model = found
        # A gallery model is named by its title, never by its training's name (its owner's dataset,
        # private), in every message and in the stored row.
        label = model.title if model else job.name
        if job.pk in seen:
            errors["loras"] = f"{label} is chosen twice"
            return []
        seen.add(job.pk)
        if job.base_model != base_model:
            errors["loras"] = f"{label} was trained on {job.base_model}; generate on that base"
            return []
        low_s, high_s = LIMITS["scale"]
        if not low_s <= choice.scale <= high_s:
            errors["loras"] = f"LoRA scales must be between {low_s} and {high_s}"
            return []
        rows.append({
            "kind": choice.kind, "id": choice.id, "scale": choice.scale, "training_id": job.pk,
            "label": label, "trigger_word": model.trigger_word if model else job.trigger_word,
        })
    return rows


def generation_create(
    *, owner: AbstractBaseUser, prompt: str, base_model: str, loras: list[LoraChoice], seed: int | None,
    steps: int, guidance: float, width: int, height: int, num_images: int = 1,
) -> Generation:
    """Check everything, store the request, and queue it for the GPU once committed."""
    errors: dict[str, str] = {}
    prompt = prompt.strip()
    if not prompt:
        errors["prompt"] = "write a prompt"
    elif len(prompt) > LIMITS["prompt_chars"][1]:
        errors["prompt"] = f"the prompt is {len(prompt)} characters; at most {LIMITS['prompt_chars'][1]}"
    if not isinstance(base_model, str) or base_model not in settings.BASE_MODELS:
        errors["base_model"] = f"{base_model!r} is not offered here; choose one of {', '.join(settings.BASE_MODELS)}"
    _check_range(errors, "steps", steps)
    _check_range(errors, "guidance", guidance)
    _check_range(errors, "num_images", num_images)
    if seed is not None:
        _check_range(errors, "seed", seed)
    _check_size(errors, width, height)
    rows = _resolve_loras(owner, loras, base_model, errors)
    if errors:
        raise ValidationError(errors)
    seed_random = seed is None
    if seed is None:  # chosen here, not on the worker, so the page can show it before it runs
        seed = secrets.randbelow(LIMITS["seed"][1] - LIMITS["num_images"][1])
    with transaction.atomic():
        generation = Generation.objects.create(
            owner=owner, prompt=prompt, base_model=base_model, loras=rows, seed=seed, seed_random=seed_random, steps=steps,
            guidance=guidance, width=width, height=height, num_images=num_images,
        )
        generation_enqueue(generation)
    return generation


def generation_count_uses(generation: Generation) -> None:
    """A succeeded generation counts one use of each gallery model it used, except its owner's.

    Counted when the images exist, not when asked for: a failed or canceled generation, or an
    owner trying their own model, says nothing about how useful the model is to others.
    """
    # Others' models are only usable as gallery models; a generation without any writes nothing.
    trainings = [row["training_id"] for row in generation.loras if row.get("kind") == "gallery"]
    if trainings:
        GalleryModel.objects.filter(training_id__in=trainings).exclude(owner_id=generation.owner_id).update(
            use_count=F("use_count") + 1)


def generation_enqueue(generation: Generation) -> None:
    def enqueue() -> None:
        from gallery.tasks import generate_images_task

        generate_images_task(generation.pk)
        publish_queue_position(generation)

    transaction.on_commit(enqueue)


def publish_state(generation: Generation, message: str = "", *, images_dropped: bool = False) -> None:
    """`images_dropped`: the images sent before this event are gone (a requeued run makes them
    again), so a page showing them clears them, live or in a replay."""
    events.publish(generation.topic, "state", {
        # step counts every image's steps, as progress's `done` does: out of `total`; `steps` is one image's.
        "state": generation.state, "step": generation.step, "steps": generation.steps,
        "total": generation.steps * generation.num_images, "error": generation.error, "message": message,
        **({"images_dropped": True} if images_dropped else {}),
    })


def publish_queue_position(generation: Generation) -> None:
    events.publish(generation.topic, "queue", selectors.queue_info(generation))


def publish_queue_positions() -> None:
    """Tell every waiting generation its new place (called when one starts)."""
    for generation in Generation.objects.filter(state=GenerationState.QUEUED).order_by("created_at")[:50]:
        publish_queue_position(generation)


def generation_cancel(*, generation: Generation) -> bool:
    """Stop a generation: a queued one at once, a running one after its current step."""
    now = timezone.now()
    if Generation.objects.filter(pk=generation.pk, state=GenerationState.QUEUED).update(
        state=GenerationState.CANCELED, cancel_requested=True, finished_at=now
    ):
        generation.refresh_from_db()
        publish_state(generation, "Canceled before it started.")
        return True
    return bool(Generation.objects.filter(pk=generation.pk, state=GenerationState.RUNNING).update(cancel_requested=True))


RUNNING_DELETE = "this generation is still running: cancel it first, then delete it once it has stopped"


def generation_delete(*, generation: Generation) -> None:
    """Delete a generation and its image files (examples made from it keep their own copies).

    A queued one is canceled and deleted; a running one is refused (a ValidationError), as a
    running training's delete is: its worker would go on writing images of a deleted row. The
    owner cancels it, which takes a step, and deletes it once it has stopped.
    """
    with transaction.atomic():
        if Generation.objects.select_for_update().filter(pk=generation.pk).first() is None:
            return  # deleted already
        # A write first: from here no worker can claim it (SQLite: the write lock is ours; PostgreSQL:
        # the row lock), so the state read next stays true until the delete commits.
        if Generation.objects.filter(pk=generation.pk, state=GenerationState.QUEUED).update(
                state=GenerationState.CANCELED, cancel_requested=True, finished_at=timezone.now()):
            generation.refresh_from_db()
            publish_state(generation, "Canceled before it started.")
        generation.refresh_from_db()
        if generation.state == GenerationState.RUNNING:
            raise ValidationError(RUNNING_DELETE)
        files = [field for image in generation.images.all() for field in (image.image, image.thumbnail)]
        generation.delete()
    delete_stored(files)
