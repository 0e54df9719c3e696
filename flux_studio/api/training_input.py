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

Two steps, so that a refused launch stores nothing: `training_source` checks what the request
names without writing anything (the view then checks the settings), and only then does
`dataset_for_training` store photos. It runs outside any transaction, each photo committing on its
own, so a long ingest never holds the database's write lock (SQLite has one for everyone, and a
running training writes its progress through it); when the ingest or the launch fails, the new
dataset is deleted with its files (`discard`).

`autocaption: true` captions photos that have no caption yet with the studio's captioner, on
the GPU worker, as the first stage of the training itself (one request, like Replicate's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile

from flux_studio.api.common import parse_id
from flux_studio.api.problems import field_error
from flux_studio.api.uploads import ingest_uploads, photos_from_url
from trainer.datasets import dataset_create, dataset_delete
from trainer.models import CaptionSource, Dataset, Photo
from trainer.photos import PhotoRejected, photo_ingest

AUTOCAPTION_KEYS = ("autocaption", "autocaption_prefix", "autocaption_suffix")
SOURCE_KEYS = ("dataset", "files", "input_images")
MAX_FILES = 200


@dataclass
class TrainingSource:
    """What a request trains on, checked but not stored yet: one of the caller's datasets as it
    is, or photos to copy, or uploaded files, into a new dataset."""

    owner: AbstractBaseUser
    dataset: Dataset | None = None
    photos: list[Photo] = field(default_factory=list)
    uploads: list[UploadedFile] = field(default_factory=list)
    style: dict[str, str | None] = field(default_factory=dict)  # trigger_word, caption_prefix, caption_suffix given
    photos_field: str = "input.files"  # where `photos` came from, to name in an error

    @property
    def is_new(self) -> bool:
        """Whether the launch makes a new dataset (deleted again if the launch is refused)."""
        return self.dataset is None

    @property
    def trigger(self) -> str:
        """The trigger word the job will freeze: the one given, else the dataset's own."""
        given = self.style.get("trigger_word")
        if given is not None:
            return given
        return self.dataset.trigger_word.strip() if self.dataset is not None else ""


def _text(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise field_error(f"input.{key}", f"a string of at most {limit} characters")
    return " ".join(value.split())


def _file_photos(owner: AbstractBaseUser, raw: Any) -> list[Photo]:
    if not isinstance(raw, list):
        raw = [raw]  # one file id
    if not raw or len(raw) > MAX_FILES:
        raise field_error("input.files", f"a file id, or a list of 1 to {MAX_FILES} file ids from POST /files")
    ids = [parse_id(value, "input.files") for value in raw]
    photos = list(Photo.objects.filter(pk__in=ids, dataset__owner=owner).order_by("id"))
    missing = sorted(set(ids) - {p.pk for p in photos})
    if missing:
        raise field_error("input.files", f"no such file(s): {', '.join(map(str, missing))}")
    return photos


def training_source(*, owner: AbstractBaseUser, data: dict[str, Any], uploads: list[UploadedFile] | None = None,
                    hosts: set[str] | None = None) -> TrainingSource:
    """Exactly one of `dataset`, `files`, `input_images` (a URL, or file parts of a multipart
    request), checked; and the trigger word and caption style given. Reads only, stores nothing."""
    uploads = uploads or []
    given = [key for key in SOURCE_KEYS if data.get(key) is not None] + (["input_images (file part)"] if uploads else [])
    if len(given) > 1:
        raise field_error(f"input.{given[0]}", f"give one of `input_images`, `files` or `dataset`, not {' and '.join(given)}")
    source = TrainingSource(owner, uploads=uploads)
    if data.get("dataset") is not None:
        source.dataset = Dataset.objects.filter(pk=parse_id(data["dataset"], "input.dataset"), owner=owner).first()
        if source.dataset is None:
            raise field_error("input.dataset", "no such dataset (or it is not yours)")
    elif data.get("files") is not None:
        source.photos = _file_photos(owner, data["files"])
    elif data.get("input_images") is not None:
        source.photos = photos_from_url(owner, data["input_images"], hosts or set())
        source.photos_field = "input.input_images"
    elif not uploads:
        raise field_error("input.dataset", "give `input_images` (a zip: the `urls.get` of POST /files, or a file part), "
                                           "`files` (file ids) or `dataset` (a dataset id)")
    source.style = {"trigger_word": _text(data, "trigger_word", 40), "caption_prefix": _text(data, "autocaption_prefix", 200),
                    "caption_suffix": _text(data, "autocaption_suffix", 200)}
    return source


def _copy(dataset: Dataset, photos: list[Photo], field_name: str) -> None:
    """Copies of the photos (through the same ingest) into `dataset`, captions kept; refused
    (422, naming them) when storage lost any of their files."""
    missing = []
    for photo in photos:
        try:
            with photo.original.open("rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            missing.append(f"{photo.original_name} (file {photo.pk})")
            continue
        caption = photo.caption if photo.caption_source != CaptionSource.NONE else None
        try:
            photo_ingest(dataset=dataset, data=data, name=photo.original_name, caption=caption)
        except PhotoRejected:
            continue  # a duplicate among the chosen files: one copy is enough
    if missing:
        raise field_error(field_name, f"the stored files of {', '.join(missing)} are missing (storage lost them); "
                                      "delete them and upload them again")


def _ingest_parts(dataset: Dataset, uploads: list[UploadedFile]) -> list[dict[str, str]]:
    """Images or zips sent as `input_images` file parts into `dataset`: the refused ones, with reasons."""
    photos, rejected = ingest_uploads(dataset, uploads)
    if not photos:
        reasons = "; ".join(f"{r['name']}: {r['reason']}" for r in rejected)
        raise field_error("input.input_images", f"no image was accepted ({reasons})")
    return rejected


def dataset_for_training(source: TrainingSource) -> tuple[Dataset, list[dict[str, str]]]:
    """The dataset to train on, and the files refused among those sent with the request.

    A new dataset's photos are stored here; call it outside any transaction. If storing fails,
    the new dataset is deleted with whatever files it already had.
    """
    if source.dataset is not None:
        return source.dataset, []
    if source.uploads:
        names = ", ".join(u.name or "upload" for u in source.uploads)
        dataset = dataset_create(owner=source.owner, name=f"API training ({names[:80]})")
    else:
        count = len(source.photos)
        dataset = dataset_create(owner=source.owner, name=f"API training ({count} photo{'' if count == 1 else 's'})")
    try:
        rejected = _ingest_parts(dataset, source.uploads) if source.uploads else []
        _copy(dataset, source.photos, source.photos_field)
    except BaseException:
        dataset_delete(dataset=dataset)
        raise
    return dataset, rejected


def apply_style(dataset: Dataset, source: TrainingSource) -> None:
    """Write the trigger word and caption style given in the input onto the dataset; run it in
    the launch's transaction, so that a refused launch leaves an existing dataset as it was."""
    changed = [name for name, value in source.style.items() if value is not None and getattr(dataset, name) != value]
    if changed:
        # No dataset-style service takes these three fields yet; plain field writes, as a form would.
        for name in changed:
            setattr(dataset, name, source.style[name])
        dataset.save(update_fields=[*changed, "updated_at"])


def discard(dataset: Dataset, source: TrainingSource) -> None:
    """Undo `dataset_for_training` after a refused launch: a new dataset goes, with its files."""
    if source.is_new:
        dataset_delete(dataset=dataset)


def autocaption_flag(data: dict[str, Any]) -> bool:
    flag = data.get("autocaption", False)
    if not isinstance(flag, bool):
        raise field_error("input.autocaption", "true or false")
    return flag
