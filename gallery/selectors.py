"""Reads for generations and the gallery: what a person may use, see, and how long they wait."""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass
from datetime import timedelta
from functools import reduce
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import BooleanField, Count, Exists, Func, OuterRef, Prefetch, Q, QuerySet, Sum, TextField, Value
from django.db.models.functions import Cast
from django.utils import timezone

from flux_studio.models import WorkerHeartbeat
from gallery.models import GalleryExample, GalleryModel, Generation, GenerationImage, GenerationState, Like
from trainer.models import JobState, TrainingJob
from trainer.presets import estimate_seconds, resolution_text

DEFAULT_GENERATION_SECONDS = 15.0


@dataclass(frozen=True)
class LoraOption:
    """A LoRA the person may pick on the generation page."""

    ref: str  # "training:3" or "gallery:5"
    kind: str
    id: int
    label: str
    trigger_word: str
    base_model: str
    training_id: int


def lora_options(user: AbstractBaseUser) -> list[LoraOption]:
    """Own finished trainings first, then published gallery models of others."""
    own = (TrainingJob.objects.filter(owner=user, state=JobState.SUCCEEDED).exclude(lora_file="")
           .select_related("dataset").order_by("-finished_at", "-pk"))
    options = [LoraOption(f"training:{j.pk}", "training", j.pk, _training_label(j), j.trigger_word, j.base_model, j.pk)
               for j in own]
    published = GalleryModel.objects.filter(published=True).exclude(owner=user).select_related("owner", "training")
    for m in published.order_by("-use_count", "-pk")[:200]:
        label = f"{m.title} (by {m.owner.username})"
        options.append(LoraOption(f"gallery:{m.pk}", "gallery", m.pk, label, m.trigger_word, m.base_model, m.training_id))
    return options


def _training_label(job: TrainingJob) -> str:
    """Tells apart trainings of one dataset (whose names are all "dataset · trigger"): the number,
    the dataset, and steps and day; the option goes on with the trigger word and the base."""
    name = job.dataset.name if job.dataset is not None else job.name
    finished = timezone.localtime(job.finished_at) if job.finished_at else None
    when = f", {finished:%b} {finished.day}" if finished else ""
    return f"#{job.pk} {name} ({job.total_steps} steps{when})"


def usable_lora(user: AbstractBaseUser, kind: str, pk: int) -> tuple[TrainingJob, GalleryModel | None] | None:
    """The training behind a LoRA reference, if `user` may generate with it; None otherwise."""
    if kind == "training":
        job = TrainingJob.objects.filter(pk=pk, owner=user, state=JobState.SUCCEEDED).exclude(lora_file="").first()
        return (job, None) if job else None
    if kind == "gallery":
        model = (
            GalleryModel.objects.filter(Q(published=True) | Q(owner=user), pk=pk)
            .select_related("training")
            .first()
        )
        if model and model.training.state == JobState.SUCCEEDED and model.training.lora_file:
            return model.training, model
    return None


def generations_of(user: AbstractBaseUser) -> QuerySet[Generation]:
    return Generation.objects.filter(owner=user).prefetch_related("images")


def generation_of(user: AbstractBaseUser | AnonymousUser, pk: int) -> Generation | None:
    if not user.is_authenticated:
        return None
    return Generation.objects.filter(owner=user, pk=pk).prefetch_related("images").first()


def typical_generation_seconds() -> float:
    """Mean run time per image of recent generations (a first guess before any ran)."""
    recent = Generation.objects.filter(state=GenerationState.SUCCEEDED, started_at__isnull=False).order_by("-finished_at")[:20]
    rows = [(g.finished_at - g.started_at).total_seconds() / max(1, g.num_images) for g in recent if g.finished_at]
    return sum(rows) / len(rows) if rows else DEFAULT_GENERATION_SECONDS


def _gpu_workers() -> int:
    cutoff = timezone.now() - timedelta(seconds=60)
    return WorkerHeartbeat.objects.filter(queue="gpu", last_seen__gte=cutoff).count()


def queue_info(generation: Generation) -> dict:
    """Where a queued generation stands: what is ahead of it and roughly when it will start.

    Generations outrank queued trainings on the GPU queue (task priority), so only generations
    queued earlier and whatever already runs on the GPU (a training, another generation) are
    ahead. A running training is not interrupted: its own ETA is the wait.
    """
    ahead = Generation.objects.filter(
        state=GenerationState.QUEUED, created_at__lt=generation.created_at
    ).aggregate(n=Count("pk"), images=Sum("num_images"))
    per_image = typical_generation_seconds()
    running = Generation.objects.filter(state=GenerationState.RUNNING).first()
    trainings = list(TrainingJob.objects.filter(state__in=(JobState.STARTING, JobState.TRAINING)).order_by("started_at"))
    workers = _gpu_workers()
    wait = (ahead["images"] or 0) * per_image
    training = None
    if trainings and len(trainings) >= max(1, workers):
        job = trainings[0]
        left = _training_left_s(job)
        training = {"step": job.step, "total": job.total_steps, "eta_s": round(left), "it_per_s": job.it_per_s}
        wait += left
    if running is not None:
        wait += per_image * max(1, running.num_images) / 2
    return {
        "position": (ahead["n"] or 0) + 1,
        "ahead": ahead["n"] or 0,
        "training": training,
        "gpu_workers": workers,
        "wait_s": round(wait),
        "per_image_s": round(per_image, 1),
    }


def _training_left_s(job: TrainingJob) -> float:
    """Seconds until a running training frees the GPU: its own ETA, else its pace, else (still
    loading, no step taken yet) the launch page's estimate for the steps it has left."""
    if job.eta_seconds is not None:
        return job.eta_seconds
    if job.it_per_s:
        return (job.total_steps - job.step) / job.it_per_s
    settings_left = {**job.config, "steps": max(0, job.total_steps - job.step)}
    if "resolution" not in settings_left or "batch_size" not in settings_left:
        return 0.0
    return float(estimate_seconds(settings_left, job.base_model, len(job.snapshot or [])))


# -- gallery ---------------------------------------------------------------------------------
# What a search word is looked for in (tags as their JSON text).
SEARCHED = ("title", "trigger_word", "description", "tags_text", "owner__username")


class UnicodeLower(Func):
    """LOWER, for every letter: SQLite's own LOWER (and LIKE) fold ASCII letters only, so there it is
    Python's `str.lower`, registered on each connection (gallery.apps)."""

    function = "LOWER"
    output_field = TextField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        return super().as_sql(compiler, connection, function=SQLITE_LOWER, **extra)


SQLITE_LOWER = "flux_lower"


def sqlite_lower(text: str | None) -> str | None:
    return text.lower() if isinstance(text, str) else text


def _folded(name: str) -> str:
    return "folded_" + name.replace("__", "_")


# Every sort ends in the id: rows that tie (same count) keep one order, so offset pages never
# repeat or skip a model.
SORTS = {"newest": ("-published_at", "-pk"), "used": ("-use_count", "-published_at", "-pk"),
         "liked": ("-like_count", "-published_at", "-pk")}


def _with_cover(qs: QuerySet[GalleryModel]) -> QuerySet[GalleryModel]:
    covers = Prefetch("examples", queryset=GalleryExample.objects.filter(is_cover=True), to_attr="covers")
    return qs.select_related("owner").prefetch_related(covers)


def browse_models(*, q: str = "", base: str = "", tag: str = "", sort: str = "newest",
                  owner: AbstractBaseUser | None = None) -> QuerySet[GalleryModel]:
    """Published models matching a search (title, trigger, tags, description, the owner's name) and
    filters; with `owner`, that person's models instead, drafts included."""
    # PostgreSQL refuses NUL in text parameters (an error, not "no match"); no stored text has one.
    q, base, tag = (text.replace("\x00", "") for text in (q, base, tag))
    # Tags are a JSON list; its text form ('["film", "portrait"]') is searchable on SQLite and PostgreSQL.
    shown = GalleryModel.objects.filter(owner=owner) if owner is not None else GalleryModel.objects.filter(published=True)
    qs = shown.annotate(tags_text=Cast("tags", TextField()))
    if q.split():  # each text lower-cased in the database, so that "café" finds "Café" on SQLite too
        qs = qs.annotate(**{_folded(name): UnicodeLower(name) for name in SEARCHED})
    for word in q.split()[:8]:
        word = word.lower()
        qs = qs.filter(reduce(operator.or_, (Q(**{f"{_folded(name)}__contains": word}) for name in SEARCHED)))
    if base:
        qs = qs.filter(base_model=base)
    if tag:
        qs = qs.filter(tags_text__icontains=json.dumps(tag.strip().lower()))
    return _with_cover(qs.order_by(*SORTS.get(sort, SORTS["newest"])))


def browse_bases() -> list[str]:
    """The base models the gallery can be filtered by: those offered here (every training's base was
    one of them when it launched), then any base a published model has that is no longer offered."""
    bases = list(settings.BASE_MODELS)
    published = GalleryModel.objects.filter(published=True).values_list("base_model", flat=True).distinct()
    return bases + sorted(set(published) - set(bases))


def popular_tags(limit: int = 20) -> list[str]:
    counts: dict[str, int] = {}
    for tags in GalleryModel.objects.filter(published=True).values_list("tags", flat=True)[:2000]:
        for tag in tags or []:
            counts[tag] = counts.get(tag, 0) + 1
    return sorted(counts, key=lambda t: (-counts[t], t))[:limit]


def visible_model(user: AbstractBaseUser | AnonymousUser, pk: int) -> GalleryModel | None:
    """A model anyone may see once published; its owner also sees it while private."""
    visible = Q(published=True)
    if user.is_authenticated:
        visible |= Q(owner=user)
    return GalleryModel.objects.filter(visible, pk=pk).select_related("owner", "training").first()


def liked_by(user: AbstractBaseUser | AnonymousUser, model: GalleryModel) -> bool:
    """Whether this person likes the model (never, when anonymous)."""
    return user.is_authenticated and Like.objects.filter(user=user, gallery_model=model).exists()


def with_liked(qs: QuerySet[GalleryModel], user: AbstractBaseUser | AnonymousUser) -> QuerySet[GalleryModel]:
    """The models annotated with `liked`: `liked_by` for each row, in the same query."""
    if not user.is_authenticated:
        return qs.annotate(liked=Value(False, output_field=BooleanField()))
    return qs.annotate(liked=Exists(Like.objects.filter(user=user, gallery_model=OuterRef("pk"))))


def other_models_of(model: GalleryModel, limit: int = 6) -> QuerySet[GalleryModel]:
    return _with_cover(GalleryModel.objects.filter(owner=model.owner_id, published=True).exclude(pk=model.pk))[:limit]


def training_summary(job: TrainingJob) -> dict[str, object]:
    c = job.config or {}
    return {
        "base model": job.base_model, "steps": job.total_steps, "learning rate": c.get("learning_rate"),
        "LoRA rank": c.get("lora_rank"), "resolution": resolution_text(c["resolution"]) if c.get("resolution") else None, "batch size": c.get("batch_size"),
        "training images": len(job.snapshot or []), "preset": c.get("preset"),
    }


def made_with(generation: Generation, training_id: int) -> bool:
    """Whether a generation used this training's LoRA (directly or through its gallery model)."""
    return any(row.get("training_id") == training_id for row in generation.loras)


def generation_images_with(user: AbstractBaseUser, job: TrainingJob) -> QuerySet[GenerationImage]:
    """The owner's generated images that used this training's LoRA (candidates for examples)."""
    ids = [g.pk for g in Generation.objects.filter(owner=user, state=GenerationState.SUCCEEDED).only("pk", "loras")[:500]
           if made_with(g, job.pk)]
    return GenerationImage.objects.filter(generation_id__in=ids).select_related("generation").order_by("-pk")[:60]
