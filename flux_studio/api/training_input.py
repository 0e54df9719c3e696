"""Turn a training request's `input` into a dataset ready to train, using the dataset services.

Three ways to say what to train on:
- `dataset`: one of your datasets (e.g. the one POST /files answered with);
- `files`: file ids; they are copied into a new dataset (through the same photo ingest), so a
  training never depends on photos that are later deleted from another dataset;
- both absent: an error that says how to upload.

`autocaption: true` captions photos that have no caption yet with the studio's captioner, on
the GPU worker, as the first stage of the training itself (one request, like Replicate's).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from flux_studio.api.common import parse_id
from flux_studio.api.problems import field_error
from trainer.datasets import dataset_create
from trainer.models import CaptionSource, Dataset, Photo
from trainer.photos import PhotoRejected, photo_ingest

AUTOCAPTION_KEYS = ("autocaption", "autocaption_prefix", "autocaption_suffix")
MAX_FILES = 200


def _text(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise field_error(f"input.{key}", f"a string of at most {limit} characters")
    return " ".join(value.split())


def _from_files(owner: AbstractBaseUser, raw: Any) -> Dataset:
    if not isinstance(raw, list) or not raw or len(raw) > MAX_FILES:
        raise field_error("input.files", f"a list of 1 to {MAX_FILES} file ids from POST /files")
    ids = [parse_id(value, "input.files") for value in raw]
    photos = list(Photo.objects.filter(pk__in=ids, dataset__owner=owner).order_by("id"))
    missing = sorted(set(ids) - {p.pk for p in photos})
    if missing:
        raise field_error("input.files", f"no such file(s): {', '.join(map(str, missing))}")
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


def dataset_for_training(*, owner: AbstractBaseUser, data: dict[str, Any]) -> Dataset:
    """The dataset to train on, with the trigger word and caption style from `data` applied."""
    if data.get("dataset") is not None and data.get("files") is not None:
        raise field_error("input.dataset", "give either `dataset` or `files`, not both")
    if data.get("dataset") is not None:
        dataset = Dataset.objects.filter(pk=parse_id(data["dataset"], "input.dataset"), owner=owner).first()
        if dataset is None:
            raise field_error("input.dataset", "no such dataset (or it is not yours)")
    elif data.get("files") is not None:
        dataset = _from_files(owner, data["files"])
    else:
        raise field_error("input.dataset", "give `dataset` (an id from POST /files) or `files` (file ids)")
    changes = {"trigger_word": _text(data, "trigger_word", 40), "caption_prefix": _text(data, "autocaption_prefix", 200),
               "caption_suffix": _text(data, "autocaption_suffix", 200)}
    changed = [name for name, value in changes.items() if value is not None and getattr(dataset, name) != value]
    if changed:
        # No dataset-style service takes these three fields yet; plain field writes, as a form would.
        for name in changed:
            setattr(dataset, name, changes[name])
        dataset.save(update_fields=[*changed, "updated_at"])
    return dataset


def autocaption_flag(data: dict[str, Any]) -> bool:
    flag = data.get("autocaption", False)
    if not isinstance(flag, bool):
        raise field_error("input.autocaption", "true or false")
    return flag
