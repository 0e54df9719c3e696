"""Writes for the community gallery: drafts, examples, publish/unpublish, likes.

A GalleryModel starts as a private draft made from a finished training. Examples are copies of
the images (a sample or a generation), so deleting a generation never breaks a model page.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from gallery import example_settings
from gallery.imaging import thumbnail_of_stored
from gallery.selectors import made_with
from gallery.models import GalleryExample, GalleryModel, GenerationImage, License, Like
from trainer.models import JobState, TrainingJob, TrainingSample

log = logging.getLogger(__name__)

MAX_TAGS = 8
MAX_TAG_CHARS = 30
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9 _-]*$")
DEFAULT_LICENSE = {"flux-schnell": License.APACHE_2, "tiny": License.MIT, "demo": License.MIT}


def parse_tags(raw: str) -> list[str]:
    """'Portrait, film , portrait' -> ['portrait', 'film']: lower case, unique, checked."""
    tags: list[str] = []
    for part in raw.split(","):
        tag = " ".join(part.strip().lower().split())
        if not tag or tag in tags:
            continue
        if len(tag) > MAX_TAG_CHARS:  # quoted cut short, it would look fine: say where it starts and how long it is
            raise ValidationError({"tags": f"tag '{tag[:20]}…' is {len(tag)} characters long; at most {MAX_TAG_CHARS}"})
        if not TAG_RE.match(tag):
            raise ValidationError({"tags": f"tag {tag!r}: only the letters a-z (no accents), digits, spaces, - and _"})
        tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise ValidationError({"tags": f"at most {MAX_TAGS} tags"})
    return tags


def check_publishable(*, owner: AbstractBaseUser, job: TrainingJob) -> None:
    if job.owner_id != owner.pk:
        raise PermissionDenied("not your training")
    if job.state != JobState.SUCCEEDED or not job.lora_file:
        raise ValidationError({"training": "only a finished training with a LoRA file can be published"})


def draft_preview(*, owner: AbstractBaseUser, job: TrainingJob) -> GalleryModel:
    """The draft a training would get, unsaved: the publishing page shows it before any POST."""
    check_publishable(owner=owner, job=job)
    # The default title names the LoRA by its trigger word, not by the training's name, which holds
    # the owner's private dataset name: a POST /models without a title would publish it.
    return GalleryModel(owner=owner, training=job, title=f"{job.trigger_word} LoRA"[:120], trigger_word=job.trigger_word,
                        base_model=job.base_model, license=DEFAULT_LICENSE.get(job.base_model, License.FLUX_DEV_NC))


def first_example_samples(job: TrainingJob) -> list[TrainingSample]:
    """A new draft's first examples: the training's last sample for each sample prompt (up to 4)."""
    latest: dict[str, TrainingSample] = {}
    for sample in job.samples.order_by("step"):
        latest[sample.prompt] = sample
    return list(latest.values())[:4]


def draft_get_or_create(*, owner: AbstractBaseUser, job: TrainingJob) -> tuple[GalleryModel, bool]:
    """The gallery entry of a finished training, existing or a new private draft with its first
    examples (writes: POST only), and whether this call created it."""
    preview = draft_preview(owner=owner, job=job)  # checks the training may be published
    model, created = GalleryModel.objects.get_or_create(training=job, defaults={
        field: getattr(preview, field) for field in ("owner", "title", "trigger_word", "base_model", "license")
    })
    if created:
        for sample in first_example_samples(job):
            example_add_from_sample(model=model, sample=sample)
    return model, created


def draft_for_training(*, owner: AbstractBaseUser, job: TrainingJob) -> GalleryModel:
    """The gallery entry of a finished training: existing, or a new private draft (writes: POST only)."""
    return draft_get_or_create(owner=owner, job=job)[0]


def gallery_model_details(*, title: str, description: str, trigger_word: str, license: str, tags: str) -> dict[str, Any]:
    """A model's details as they would be stored, checked: a ValidationError names every refused
    field. Writes nothing, so a caller can refuse details before it makes a draft."""
    errors = {}
    # PostgreSQL cannot store NUL (the trigger word and tags patterns already refuse it).
    for name, value in (("title", title), ("description", description)):
        if "\x00" in value:
            errors[name] = "may not contain NUL characters"
    if not title.strip():
        errors["title"] = "give the model a title"
    elif len(title.strip()) > 120:
        errors["title"] = f"at most 120 characters (this one has {len(title.strip())})"
    if len(description.strip()) > 5000:
        errors["description"] = f"at most 5,000 characters (this one has {len(description.strip()):,})"
    if not re.fullmatch(r"[\w-]{1,40}", trigger_word.strip()):
        errors["trigger_word"] = "one word: letters, digits, - or _, up to 40 characters"
    if license not in License.values:
        errors["license"] = f"choose one of the offered licenses: {', '.join(License.values)}"
    try:
        tag_list = parse_tags(tags)
    except ValidationError as exc:
        errors.update({k: " ".join(v) for k, v in exc.message_dict.items()})
    if errors:
        raise ValidationError(errors)
    return {"title": title.strip(), "description": description.strip(), "trigger_word": trigger_word.strip(),
            "license": license, "tags": tag_list}


def gallery_model_update(
    *, model: GalleryModel, title: str, description: str, trigger_word: str, license: str, tags: str,
) -> GalleryModel:
    details = gallery_model_details(title=title, description=description, trigger_word=trigger_word, license=license,
                                    tags=tags)
    for field, value in details.items():
        setattr(model, field, value)
    model.save(update_fields=list(details))
    return model


def _next_position(model: GalleryModel) -> int:
    return (model.examples.aggregate(m=Max("position"))["m"] or 0) + 1


# The files copied inside the innermost `copies_undone_on_error` block: (storage, name) pairs.
_COPIED: ContextVar[list[tuple[Any, str]] | None] = ContextVar("copied_example_files", default=None)


@contextmanager
def copies_undone_on_error() -> Iterator[None]:
    """Around a transaction that adds examples: when it fails, its rows roll back and the
    example files it copied into storage are deleted too, so a refused request leaves no files
    behind. Put it outside `transaction.atomic()`. A block inside another one leaves the files
    to the outer block, which may still fail after the inner one is done.
    """
    if _COPIED.get() is not None:
        yield
        return
    copied: list[tuple[Any, str]] = []
    token = _COPIED.set(copied)
    try:
        yield
    except BaseException:
        for storage, name in copied:
            try:
                storage.delete(name)
            except Exception:  # one that cannot go now must not keep the others, or hide the error
                log.warning("could not delete the example copy %s", name, exc_info=True)
        raise
    finally:
        _COPIED.reset(token)


def _copy_example(model: GalleryModel, field: Any, prompt: str, settings: dict[str, Any]) -> GalleryExample:
    with field.open("rb") as handle:
        data = handle.read()
    example = GalleryExample(gallery_model=model, prompt=prompt, settings=settings, position=_next_position(model),
                             is_cover=not model.examples.exists())
    copied = _COPIED.get()
    for stored, name, content in (
        (example.image, "example.png", lambda: ContentFile(data)),
        (example.thumbnail, "example.jpg", lambda: thumbnail_of_stored(example.image)),
    ):
        stored.save(name, content(), save=False)
        if copied is not None:
            copied.append((stored.storage, stored.name))
    example.save()
    return example


def sample_source(sample: TrainingSample) -> str:
    return example_settings.sample_source(sample.step)


def example_add_from_sample(*, model: GalleryModel, sample: TrainingSample) -> GalleryExample:
    """Copy a training sample with the settings the engine drew it with (its own seed, steps,
    guidance and size: not the training's), so "Try these settings" remakes it."""
    if sample.job_id != model.training_id:
        raise PermissionDenied("that sample belongs to another training")
    settings = example_settings.sample_settings(model.training, sample.prompt, sample.step)
    return _copy_example(model, sample.image, sample.prompt, settings)


def samples_already_examples(*, model: GalleryModel, samples: Iterable[TrainingSample]) -> set[int]:
    """The ids of `samples` that `model` already has as examples (or, for an unsaved draft, that
    become its first examples when it is saved): adding them again adds nothing."""
    if not model.pk:
        return {s.pk for s in first_example_samples(model.training)}
    present = {(e.prompt, e.settings.get("source")) for e in model.examples.all()}
    return {s.pk for s in samples if (s.prompt, sample_source(s)) in present}


def images_already_examples(*, model: GalleryModel, images: Iterable[GenerationImage]) -> set[int]:
    """The ids of generated `images` that `model` already has as examples (same prompt and settings)."""
    if not model.pk:
        return set()
    present = [(e.prompt, e.settings) for e in model.examples.all()]
    images = list(images)
    titles = published_titles(row.get("training_id") for i in images for row in i.generation.loras)
    return {i.pk for i in images if (i.generation.prompt, generation_settings(i, model, titles)) in present}


def examples_add_samples(*, model: GalleryModel, samples: Iterable[TrainingSample]) -> list[GalleryExample]:
    """Add training samples as examples, skipping those already there (a draft made by this very
    request already holds the first samples: they are not added twice). Returns the new examples."""
    present = {(e.prompt, e.settings.get("source")) for e in model.examples.all()}
    added = []
    for sample in samples:
        key = (sample.prompt, sample_source(sample))
        if key not in present:
            added.append(example_add_from_sample(model=model, sample=sample))
            present.add(key)
    return added


def example_add_from_generation(*, owner: AbstractBaseUser, model: GalleryModel, image: GenerationImage) -> GalleryExample:
    """Copy one of the owner's generated images, with its prompt and settings, onto their model.

    The same picture (prompt and settings) added again is not copied twice: the example already
    on the model is returned."""
    g = image.generation
    if model.owner_id != owner.pk or g.owner_id != owner.pk:
        raise PermissionDenied("both the image and the model must be yours")
    if not made_with(g, model.training_id):  # an example must show what this LoRA does
        raise ValidationError({"examples": "that image was not generated with this model's LoRA"})
    settings = generation_settings(image, model)
    for example in model.examples.filter(prompt=g.prompt):
        if example.settings == settings:
            return example
    return _copy_example(model, image.image, g.prompt, settings)


def generation_settings(image: GenerationImage, model: GalleryModel, titles: dict[int, str] | None = None) -> dict[str, Any]:
    """The settings an example of `model` copied from a generated image carries (they also tell
    copies apart). Examples are public: each LoRA is named as `public_lora_label` says; `titles`:
    `published_titles` of its trainings, when already read."""
    g = image.generation
    if titles is None:
        titles = published_titles(row.get("training_id") for row in g.loras)
    return {
        "seed": image.seed, "steps": g.steps, "guidance": g.guidance, "width": g.width, "height": g.height,
        "base_model": g.base_model,
        "loras": [{"label": public_lora_label(r, model, titles), "scale": r["scale"]} for r in g.loras],
    }


def published_titles(training_ids: Iterable[int | None]) -> dict[int, str]:
    """The gallery titles of those trainings that are published models, by training id."""
    ids = {pk for pk in training_ids if pk is not None}
    if not ids:
        return {}
    return dict(GalleryModel.objects.filter(training_id__in=ids, published=True).values_list("training_id", "title"))


def public_lora_label(row: dict[str, Any], model: GalleryModel, titles: dict[int, str]) -> str:
    """How a public example names a LoRA its picture was made with (a generation's `loras` row):
    "this model" for the model's own training, a published gallery model by its title (whether
    the generation named the model or, being its owner, the training), and anything else (the
    owner's other trainings, drafts: their names are theirs alone) as "a private LoRA"."""
    if row.get("training_id") == model.training_id:
        return example_settings.THIS_MODEL
    return titles.get(row.get("training_id")) or example_settings.PRIVATE_LORA


def example_set_cover(*, example: GalleryExample) -> None:
    with transaction.atomic():
        example.gallery_model.examples.update(is_cover=False)
        GalleryExample.objects.filter(pk=example.pk).update(is_cover=True)


def example_remove(*, example: GalleryExample) -> None:
    model, was_cover = example.gallery_model, example.is_cover
    files = [example.image, example.thumbnail]
    example.delete()
    for field in files:
        if field:
            field.storage.delete(field.name)
    if was_cover and (first := model.examples.order_by("position", "id").first()):
        example_set_cover(example=first)


def file_digest(field: Any) -> tuple[int, str]:
    """Size and sha256 of a stored file, read in chunks (LoRAs of real FLUX runs are ~100 MB)."""
    digest, size = hashlib.sha256(), 0
    with field.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def gallery_model_publish(*, model: GalleryModel) -> GalleryModel:
    job = model.training
    if not job.lora_file:
        raise ValidationError({"training": "the training has no LoRA file"})
    if not model.examples.exists():
        raise ValidationError({"examples": "add at least one example image (it becomes the cover)"})
    model.lora_size, model.lora_sha256 = file_digest(job.lora_file)
    if job.kohya_file:
        model.kohya_size, model.kohya_sha256 = file_digest(job.kohya_file)
    model.published, model.published_at = True, model.published_at or timezone.now()
    model.save()
    return model


def gallery_model_unpublish(*, model: GalleryModel) -> GalleryModel:
    GalleryModel.objects.filter(pk=model.pk).update(published=False)
    model.published = False
    return model


def like_set(*, user: AbstractBaseUser, model: GalleryModel, liked: bool) -> int:
    """Like or unlike (idempotent: a second like counts nothing); returns the new like count."""
    if not model.published:
        raise PermissionDenied("only published models can be liked")
    with transaction.atomic():
        if liked:
            try:
                with transaction.atomic():
                    Like.objects.create(user=user, gallery_model=model)
            except IntegrityError:  # already liked: the constraint keeps it to one
                pass
        else:
            Like.objects.filter(user=user, gallery_model=model).delete()
        count = Like.objects.filter(gallery_model=model).count()
        GalleryModel.objects.filter(pk=model.pk).update(like_count=count)
    return count
