"""Turn a training request's `input` into a dataset ready to train, using the dataset services.

Ways to say what to train on (exactly one):
- `input_images`: images in a zip, like Replicate's input. Either the URL POST /files answered
  with (`urls.get` of the upload, or of one file), or, in a multipart request, file parts named
  `input_images` (a zip or images) next to an `input` field holding the JSON input;
- `files`: a file id or a list of them;
- `dataset`: one of your datasets (e.g. the one POST /files answered with);
- none: an error that says how to upload.
Photos named by URL or id are copied into a new dataset (through the same photo ingest), so a
training never depends on photos that are later deleted from another dataset.

`autocaption: true` captions photos that have no caption yet with the studio's captioner, on
the GPU worker, as the first stage of the training itself (one request, like Replicate's).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile

from flux_studio.api.common import parse_id
from flux_studio.api.problems import field_error
from flux_studio.api.uploads import ingest_uploads, photos_from_url
from trainer.datasets import dataset_create
from trainer.models import CaptionSource, Dataset, Photo
from trainer.photos import PhotoRejected, photo_ingest

AUTOCAPTION_KEYS = ("autocaption", "autocaption_prefix", "autocaption_suffix")
SOURCE_KEYS = ("dataset", "files", "input_images")
MAX_FILES = 200


def _text(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise field_error(f"input.{key}", f"a string of at most {limit} characters")
    return " ".join(value.split())


def _copy(owner: AbstractBaseUser, photos: list[Photo]) -> Dataset:
    """A new dataset with copies of the photos (through the same ingest), captions kept."""
    dataset = dataset_create(owner=owner, name=f"API training ({len(photos)} photos)")
    for photo in photos:
        with photo.original.open("rb") as handle:
            data = handle.read()
        caption = photo.caption if photo.caption_source != CaptionSource.NONE else None
        try:
            photo_ingest(dataset=dataset, data=data, name=photo.original_name, caption=caption)
        except PhotoRejected:
            continue  # a duplicate among the chosen files: one copy is enough
    return dataset


def _from_files(owner: AbstractBaseUser, raw: Any) -> Dataset:
    if not isinstance(raw, list):
        raw = [raw]  # one file id
    if not raw or len(raw) > MAX_FILES:
        raise field_error("input.files", f"a file id, or a list of 1 to {MAX_FILES} file ids from POST /files")
    ids = [parse_id(value, "input.files") for value in raw]
    photos = list(Photo.objects.filter(pk__in=ids, dataset__owner=owner).order_by("id"))
    missing = sorted(set(ids) - {p.pk for p in photos})
    if missing:
        raise field_error("input.files", f"no such file(s): {', '.join(map(str, missing))}")
    return _copy(owner, photos)


def _from_parts(owner: AbstractBaseUser, uploads: list[UploadedFile]) -> tuple[Dataset, list[dict[str, str]]]:
    """Images or zips sent as `input_images` file parts: a new dataset of the accepted ones."""
    names = ", ".join(u.name or "upload" for u in uploads)
    dataset = dataset_create(owner=owner, name=f"API training ({names[:80]})")
    photos, rejected = ingest_uploads(dataset, uploads)
    if not photos:
        reasons = "; ".join(f"{r['name']}: {r['reason']}" for r in rejected)
        raise field_error("input.input_images", f"no image was accepted ({reasons})")
    return dataset, rejected


def _source(owner: AbstractBaseUser, data: dict[str, Any], uploads: list[UploadedFile],
            hosts: set[str]) -> tuple[Dataset, list[dict[str, str]]]:
    """Exactly one of: `dataset`, `files`, `input_images` (a URL, or file parts of a multipart request)."""
    given = [key for key in SOURCE_KEYS if data.get(key) is not None] + (["input_images (file part)"] if uploads else [])
    if len(given) > 1:
        raise field_error(f"input.{given[0]}", f"give one of `input_images`, `files` or `dataset`, not {' and '.join(given)}")
    if uploads:
        return _from_parts(owner, uploads)
    if data.get("dataset") is not None:
        dataset = Dataset.objects.filter(pk=parse_id(data["dataset"], "input.dataset"), owner=owner).first()
        if dataset is None:
            raise field_error("input.dataset", "no such dataset (or it is not yours)")
        return dataset, []
    if data.get("files") is not None:
        return _from_files(owner, data["files"]), []
    if data.get("input_images") is not None:
        return _copy(owner, photos_from_url(owner, data["input_images"], hosts)), []
    raise field_error("input.dataset", "give `input_images` (a zip: the `urls.get` of POST /files, or a file part), "
                                       "`files` (file ids) or `dataset` (a dataset id)")


def dataset_for_training(*, owner: AbstractBaseUser, data: dict[str, Any], uploads: list[UploadedFile] | None = None,
                         hosts: set[str] | None = None) -> tuple[Dataset, list[dict[str, str]]]:
    """The dataset to train on, with the trigger word and caption style from `data` applied,
    and the files refused among those sent with the request (with reasons)."""
    dataset, rejected = _source(owner, data, uploads or [], hosts or set())
    changes = {"trigger_word": _text(data, "trigger_word", 40), "caption_prefix": _text(data, "autocaption_prefix", 200),
               "caption_suffix": _text(data, "autocaption_suffix", 200)}
    changed = [name for name, value in changes.items() if value is not None and getattr(dataset, name) != value]
    if changed:
        # No dataset-style service takes these three fields yet; plain field writes, as a form would.
        for name in changed:
            setattr(dataset, name, changes[name])
        dataset.save(update_fields=[*changed, "updated_at"])
    return dataset, rejected


def autocaption_flag(data: dict[str, Any]) -> bool:
    flag = data.get("autocaption", False)
    if not isinstance(flag, bool):
        raise field_error("input.autocaption", "true or false")
    return flag
