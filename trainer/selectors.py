"""Reads for the dataset studio: lists, the health summary, JSON for the grid, the export zip,
and a training's own data as a zip."""

from __future__ import annotations

import logging
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import IO

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import Storage
from django.db.models import Count, Max, Q, QuerySet
from django.http import FileResponse
from django.urls import reverse

from flux_studio.models import Event
from trainer.datasets import has_word
from trainer.models import Dataset, Photo, TrainingJob
from trainer.photos import WARN_SIDE

log = logging.getLogger(__name__)

# Aspect buckets a person recognises; FLUX trains on any, but a mix of extremes crops badly.
ASPECTS = ((0.8, "portrait"), (1.25, "square"), (float("inf"), "landscape"))


def datasets_for(user: AbstractBaseUser) -> QuerySet[Dataset]:
    used = Q(photos__excluded=False)  # counted as the dataset's page counts: the photos that train
    return Dataset.objects.filter(owner=user).annotate(
        photo_count=Count("photos"), training_count=Count("photos", filter=used),
        captioned_count=Count("photos", filter=used & ~Q(photos__caption="")),
    )


def photo_urls(photo: Photo) -> dict[str, str]:
    args = [photo.dataset_id, photo.pk]
    return {kind: reverse("trainer:photo_file", args=[*args, kind]) for kind in ("thumb", "image", "original")}


def photo_payload(photo: Photo) -> dict[str, object]:
    """What the grid needs about one photo (also the upload endpoint's answer)."""
    urls = photo_urls(photo)
    return {
        "id": photo.pk, "name": photo.original_name, "width": photo.width, "height": photo.height,
        "format": photo.format, "size_bytes": photo.size_bytes, "caption": photo.caption,
        "caption_source": photo.caption_source, "caption_error": photo.caption_error,
        "excluded": photo.excluded, "warnings": photo.warnings, "duplicate_of": photo.duplicate_of_id,
        "thumbnail_url": urls["thumb"], "image_url": urls["image"],
    }


@dataclass
class Health:
    """The dataset at a glance, with the problems worth fixing before training."""

    count: int = 0
    training: int = 0
    captioned: int = 0
    missing_caption: int = 0
    missing_trigger: int = 0
    small: int = 0
    near_duplicates: int = 0
    min_side: int = 0
    median_side: int = 0
    aspects: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    total_mb: float = 0.0
    total_bytes: int = 0
    problems: list[str] = field(default_factory=list)


def dataset_health(dataset: Dataset) -> Health:
    photos = list(dataset.photos.only("width", "height", "format", "size_bytes", "caption", "excluded", "duplicate_of"))
    health = Health(count=len(photos))
    if not photos:
        health.problems.append("No photos yet: 10–30 varied photos of the subject work well.")
        return health
    used = [p for p in photos if not p.excluded]
    shorts = sorted(min(p.width, p.height) for p in used) or [0]
    health.training = len(used)
    health.captioned = sum(1 for p in used if p.caption.strip())
    health.missing_caption = health.training - health.captioned
    if dataset.trigger_word:
        health.missing_trigger = sum(1 for p in used if p.caption.strip() and not has_word(p.caption, dataset.trigger_word))
    health.small = sum(1 for side in shorts if 0 < side < WARN_SIDE)
    health.near_duplicates = sum(1 for p in used if p.duplicate_of_id)
    health.min_side, health.median_side = shorts[0], shorts[len(shorts) // 2]
    health.aspects = dict(Counter(_aspect(p) for p in used))
    health.formats = dict(Counter(p.format for p in used))  # as the aspects: the photos that train
    health.total_bytes = sum(p.size_bytes for p in photos)
    health.total_mb = round(health.total_bytes / 1048576, 1)
    health.problems = _problems(health, dataset)
    return health


def _aspect(photo: Photo) -> str:
    ratio = photo.width / max(1, photo.height)
    return next(name for limit, name in ASPECTS if ratio < limit)


def _problems(h: Health, dataset: Dataset) -> list[str]:
    problems = []
    if h.training < 5:
        problems.append(f"Only {h.training} photo{'s' if h.training != 1 else ''} to train on: aim for 10–30.")
    if h.missing_caption:
        problems.append(f"{h.missing_caption} caption{'s are' if h.missing_caption != 1 else ' is'} missing.")
    if not dataset.trigger_word:
        problems.append("No trigger word set.")
    elif h.missing_trigger:
        problems.append(f"{h.missing_trigger} caption{'s lack' if h.missing_trigger != 1 else ' lacks'} the trigger word.")
    if h.small:
        problems.append(f"{h.small} photo{'s are' if h.small != 1 else ' is'} under {WARN_SIDE} px.")
    if h.near_duplicates:
        problems.append(f"{h.near_duplicates} near-duplicate{'s' if h.near_duplicates != 1 else ''}: they overweight one picture.")
    return problems


def dataset_export_zip(dataset: Dataset) -> IO[bytes]:
    """A zip of the training images with same-name .txt captions (kohya / ai-toolkit layout).

    Spooled to a temporary file so a big dataset never sits in memory. A photo whose stored file
    is missing (lost by storage) is left out, and MISSING_PHOTOS.txt names it and what to do,
    rather than the whole download failing.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024)
    used: Counter[str] = Counter()
    written: set[str] = set()
    missing: list[str] = []
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as archive:  # JPEGs do not compress
        for photo in dataset.photos.filter(excluded=False).order_by("id"):
            data = _stored_bytes(photo.image.storage, photo.image.name)
            if data is None:
                missing.append(f"{photo.original_name} (photo id {photo.pk})")
                continue
            stem = _safe_stem(photo.original_name)
            used[stem] += 1
            if used[stem] > 1:
                stem = f"{stem}_{used[stem]}"
            archive.writestr(f"{stem}.jpg", data)
            archive.writestr(f"{stem}.txt", photo.caption + "\n" if photo.caption else "")
            written.add(stem)
        if missing:
            note = _free_name(MISSING_NOTE, written)
            archive.writestr(note, _missing_text(missing, "this export",
                                                 "Remove them from the dataset or upload them again, then export again."))
    spool.seek(0)
    return spool


MISSING_NOTE = "MISSING_PHOTOS"  # + .txt: the note a download carries when stored photo files are gone


def _stored_bytes(storage: Storage, name: str) -> bytes | None:
    """A stored file's bytes, or None when storage has no such file (lost, or never stored)."""
    if not name:
        return None
    try:
        with storage.open(name, "rb") as handle:
            return handle.read()
    except FileNotFoundError:  # local storage, and S3 (django-storages maps its 404 to this)
        log.warning("stored file %s is missing; left out of a download", name)
        return None


def _free_name(stem: str, taken: set[str]) -> str:
    """`stem`.txt, or with a number when a photo's own files already use that name."""
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}"
    return f"{name}.txt"


def _missing_text(missing: list[str], what: str, advice: str) -> str:
    photos = "1 photo" if len(missing) == 1 else f"{len(missing)} photos"
    lines = [f"{photos} could not be put in {what}: the stored file is missing.", "",
             *(f"- {row}" for row in missing), "", advice, ""]
    return "\n".join(lines)


def snapshot_files(snapshot: list[dict[str, object]]) -> list[tuple[str, str, str]]:
    """A training's frozen photos as the engine reads them: (image file name, storage name,
    caption) per photo, the caption going into the same-name .txt (what the worker writes)."""
    return [(f"{index:04d}{PurePosixPath(str(row['image'])).suffix or '.png'}", str(row["image"]), str(row["caption"]))
            for index, row in enumerate(snapshot)]


def download_stem(job: TrainingJob) -> str:
    """The start of a training's download names: its trigger word, safe in a file name, and its
    number, so two trainings of one dataset do not download over each other ("zxq_12")."""
    word = "".join(ch if ch.isalnum() else "_" for ch in job.trigger_word.lower()) or "lora"
    return f"{word}_{job.pk}"


# A training's files as downloaded, by field: the page's and the API's names are the same.
DOWNLOAD_ENDINGS = {"lora_file": "lora.safetensors", "kohya_file": "lora_kohya.safetensors", "config_file": "config.yaml"}


def download_name(job: TrainingJob, field: str) -> str:
    return f"{download_stem(job)}_{DOWNLOAD_ENDINGS[field]}"


def training_data_response(job: TrainingJob) -> FileResponse:
    """The training data zip as a private download (the page's and the API's)."""
    response = FileResponse(training_data_zip(job), as_attachment=True, filename=f"{download_stem(job)}_training_data.zip",
                            content_type="application/zip")
    response["Cache-Control"] = "private, max-age=300"  # as every private file (flux_studio.files)
    return response


def training_data_zip(job: TrainingJob) -> IO[bytes]:
    """The photos and captions exactly as the training trained on them, in a `dataset/` folder:
    unzipped beside the training's config.yaml (whose images_dir is `dataset`), the engine runs
    it as it is (`python -m trainer.engine train --config config.yaml`). Spooled like the export.
    A photo whose stored file is missing is left out (its caption too), and MISSING_PHOTOS.txt,
    beside the folder, names it."""
    from django.core.files.storage import default_storage

    spool = tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024)
    missing: list[tuple[str, object]] = []
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_STORED) as archive:
        for (name, stored, caption), row in zip(snapshot_files(job.snapshot), job.snapshot):
            data = _stored_bytes(default_storage, stored)
            if data is None:
                missing.append((name, row.get("photo_id") if isinstance(row, dict) else None))
                continue
            archive.writestr(f"dataset/{name}", data)
            archive.writestr(f"dataset/{PurePosixPath(name).stem}.txt", caption)
        if missing:
            ids = [pk for _, pk in missing if isinstance(pk, int)]
            names = dict(Photo.objects.filter(pk__in=ids, dataset__owner_id=job.owner_id).values_list("pk", "original_name"))
            rows = [f"dataset/{name}" + (f" ({names[pk]}, photo id {pk})" if pk in names else
                                         f" (photo id {pk}, since deleted)" if isinstance(pk, int) else "")
                    for name, pk in missing]
            archive.writestr(f"{MISSING_NOTE}.txt", _missing_text(
                rows, "this training's data",
                "A training keeps the photos it was launched with, so they cannot be added back here. To train "
                "again, remove them from the dataset or upload them again, then launch a new training."))
    spool.seek(0)
    return spool


def _safe_stem(name: str) -> str:
    stem = PurePosixPath(name.replace("\\", "/")).stem
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem)[:60] or "photo"


def caption_counts(dataset: Dataset) -> tuple[int, int]:
    """(captioned, total) over photos that will train."""
    used = dataset.photos.filter(excluded=False)
    return used.exclude(caption="").count(), used.count()


def last_event_id(dataset: Dataset) -> int:
    """The newest event of the dataset's topic: the page renders the state up to it, so its
    live view starts after it instead of replaying old captions over newer edits."""
    return Event.objects.filter(topic=dataset.topic).aggregate(last=Max("id"))["last"] or 0
