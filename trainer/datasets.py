"""Writes for datasets and their captions: create, rename, duplicate, delete, bulk caption edits.

Bulk caption edits return the changes they made (id, before, after) so the page can show a
preview (dry_run=True) and undo (captions_restore with the "before" texts).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable, Literal

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import QuerySet

from flux_studio.files import delete_stored
# The caption style's pure-Python part: importing it loads no torch (see its package).
from trainer.engine.captioning.style import replace_subject
from trainer.models import CaptionSource, Dataset, Photo, TrainingJob
from trainer.photos import MAX_CAPTION, MAX_CAPTION_FILE, photo_files_delete, tidy_caption

BulkOp = Literal["replace", "prepend", "append", "insert_trigger", "template"]
BULK_OPS = ("replace", "prepend", "append", "insert_trigger", "template")


@dataclass(frozen=True)
class CaptionChange:
    id: int
    before: str
    after: str
    # Where the caption came from before the change, so an undo puts the source back too (an
    # auto caption restored by undo must stay re-captionable, not become "written by you").
    before_source: str = CaptionSource.NONE

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def dataset_create(*, owner: AbstractBaseUser, name: str) -> Dataset:
    name = " ".join(name.split())
    if not name:
        raise ValidationError({"name": "Give the dataset a name."})
    return Dataset.objects.create(owner=owner, name=name[:120])


def dataset_rename(*, dataset: Dataset, name: str) -> Dataset:
    name = " ".join(name.split())
    if not name:
        raise ValidationError({"name": "Give the dataset a name."})
    dataset.name = name[:120]
    dataset.save(update_fields=["name", "updated_at"])
    return dataset


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete the rows now and the files once the delete has committed (never the reverse).

    The dataset's row is locked first, as a photo's ingest locks it to add the photo: a photo
    either lands before the list below (its files go too) or finds the dataset gone."""
    with transaction.atomic():
        if not Dataset.objects.select_for_update().filter(pk=dataset.pk).exists():
            return  # deleted already
        photos = list(dataset.photos.all())
        owner_id = dataset.owner_id
        dataset.delete()
        _delete_files_after_commit(photos, owner_id)


def images_in_training_snapshots(owner_id: int) -> frozenset[str]:
    """Stored image names that some training job of this owner trains on.

    A job freezes its photos as storage names (trainer.jobs.snapshot_of) and reads them again
    when it starts, resumes or is continued; deleting those files would break it, so they stay
    while any job names them. Only the owner's jobs can name the owner's photos.
    """
    names = set()
    for snapshot in TrainingJob.objects.filter(owner_id=owner_id).values_list("snapshot", flat=True):
        names.update(row.get("image", "") for row in snapshot or [] if isinstance(row, dict))
    return frozenset(names)


def _delete_files_after_commit(photos: list[Photo], owner_id: int) -> None:
    """Delete the photos' files once the rows are gone, keeping any a training job still needs.

    The jobs are read after the commit, so a job launched up to that moment keeps its files.
    """
    if not photos:
        return

    def delete() -> None:
        keep = images_in_training_snapshots(owner_id)
        for photo in photos:
            photo_files_delete(photo, keep=keep)

    transaction.on_commit(delete)


@transaction.atomic
def dataset_duplicate(*, dataset: Dataset, name: str = "") -> Dataset:
    """A new dataset with copies of every photo file, caption and setting, to try again freely."""
    copy = Dataset.objects.create(
        owner=dataset.owner, name=(name or f"{dataset.name} (copy)")[:120], trigger_word=dataset.trigger_word,
        caption_placement=dataset.caption_placement, caption_prefix=dataset.caption_prefix,
        caption_suffix=dataset.caption_suffix, captioner=dataset.captioner, caption_prompt=dataset.caption_prompt,
    )
    id_map: dict[int, Photo] = {}
    copied: list = []
    missing: list[str] = []
    for photo in dataset.photos.order_by("id"):
        old_id, name = photo.pk, photo.original_name
        duplicate_of = photo.duplicate_of_id
        photo.pk, photo.id, photo.dataset, photo.duplicate_of = None, None, copy, id_map.get(duplicate_of)
        try:
            for file in (photo.original, photo.image, photo.thumbnail):
                # Files are copied, not shared: deleting one dataset must not break the other.
                with file.storage.open(file.name, "rb") as handle:
                    file.save(file.name.rsplit("/", 1)[-1], ContentFile(handle.read()), save=False)
                copied.append(file)
        except FileNotFoundError:
            missing.append(name)
            continue
        photo.save()
        id_map[old_id] = photo
    if missing:
        delete_stored(copied)  # the copy's rows roll back with this transaction; the files it wrote go now
        raise ValidationError(f"Not duplicated: storage lost the files of {len(missing)} photo"
                              f"{'' if len(missing) == 1 else 's'} ({', '.join(missing[:10])}"
                              f"{', …' if len(missing) > 10 else ''}); delete them or upload them again, then duplicate.")
    return copy


def _require_text(**fields: object) -> None:
    """Refuse a caption or edit text that is not a string (JSON lets a list or null through,
    and str() of it would be stored as "['x']" or "None")."""
    wrong = {name: "expected text (a string)" for name, value in fields.items() if not isinstance(value, str)}
    if wrong:
        raise ValidationError(wrong)


def photo_caption_set(*, photo: Photo, caption: str) -> Photo:
    """A caption the person wrote: marked USER so auto-captioning never overwrites it."""
    _require_text(caption=caption)
    caption = tidy_caption(caption)
    if len(caption) > MAX_CAPTION:
        raise ValidationError({"caption": f"{len(caption)} characters is over the limit of {MAX_CAPTION}; shorten it"})
    photo.caption = caption
    photo.caption_source = CaptionSource.USER if caption else CaptionSource.NONE
    photo.caption_error = ""
    photo.save(update_fields=["caption", "caption_source", "caption_error"])
    return photo


def photos_delete(*, dataset: Dataset, photo_ids: Iterable[int]) -> int:
    photos = list(dataset.photos.filter(pk__in=list(photo_ids)))
    Photo.objects.filter(pk__in=[p.pk for p in photos]).delete()
    _delete_files_after_commit(photos, dataset.owner_id)
    return len(photos)


def photos_set_excluded(*, dataset: Dataset, photo_ids: Iterable[int], excluded: bool) -> int:
    return dataset.photos.filter(pk__in=list(photo_ids)).update(excluded=excluded)


def has_word(text: str, word: str) -> bool:
    """Whether `word` appears as a whole word, ignoring case (as the captioner's style does)."""
    return bool(word) and re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) is not None


def template_text(dataset: Dataset) -> str:
    """The no-model caption: "a photo of TRIGGER", with the dataset's prefix/suffix around it."""
    body = f"a photo of {dataset.trigger_word}" if dataset.trigger_word else "a photo"
    parts = [p.strip(" ,") for p in (dataset.caption_prefix, body, dataset.caption_suffix) if p.strip(" ,")]
    return ", ".join(parts)


def _with_trigger(caption: str, dataset: Dataset) -> str:
    """The caption with the trigger placed as the dataset's caption style says: "replace" puts
    it instead of the subject noun phrase, as auto-captions do, and falls back to the front
    when no subject is found ("sleeping on a sofa")."""
    trigger = dataset.trigger_word
    if not caption:
        return template_text(dataset)
    if dataset.caption_placement == "replace":
        replaced = replace_subject(caption, trigger)
        if replaced is not None:
            return replaced
    if dataset.caption_placement == "suffix":
        return f"{caption.rstrip(' .')}, {trigger}."
    return f"{trigger}, {caption}"


_CLOSE_UP = tuple(",.;:!?)")  # punctuation that follows a word without a space


def _joined(left: str, right: str) -> str:
    """Two pieces of caption with one space between ("a cat" + "on a sofa"), none before
    punctuation ("a cat" + ", soft light"), and no doubled space where a piece already had one."""
    left, right = left.rstrip(), right.lstrip()
    if not left or not right:
        return left or right
    return f"{left}{right}" if right.startswith(_CLOSE_UP) else f"{left} {right}"


def _edit(photo: Photo, dataset: Dataset, op: BulkOp, *, find: str, replace: str, text: str,
          case_sensitive: bool) -> str:
    caption = photo.caption
    if op == "replace":
        flags = 0 if case_sensitive else re.IGNORECASE
        return re.sub(re.escape(find), lambda _: replace, caption, flags=flags)
    if op == "prepend":
        return _joined(text, caption)
    if op == "append":
        return _joined(caption, text)
    if op == "insert_trigger":
        return caption if has_word(caption, dataset.trigger_word) else _with_trigger(caption, dataset)
    return caption or template_text(dataset)  # template: only empty captions are filled


def _bulk_source(op: BulkOp, photo: Photo, after: str) -> str:
    if not after:
        return CaptionSource.NONE
    if op == "template" or (op == "insert_trigger" and not photo.caption):
        return CaptionSource.TEMPLATE
    return CaptionSource.USER  # the person asked for this edit: protect it from re-captioning


def captions_bulk_edit(
    *, dataset: Dataset, op: BulkOp, photo_ids: Iterable[int] | None = None, find: str = "",
    replace: str = "", text: str = "", case_sensitive: bool = False, dry_run: bool = False,
) -> list[CaptionChange]:
    """Apply one edit to the chosen photos (all when photo_ids is None); return what changed.

    All or nothing: an edit that would make any caption longer than MAX_CAPTION changes none and
    names those photos (cutting them would drop the end of the person's text without a word).
    A dry run is refused the same way, so the preview says what applying would say.
    """
    _bulk_request_check(dataset, op, find=find, replace=replace, text=text)
    text = " ".join(text.split())
    with transaction.atomic():
        edits = []
        for photo in _chosen(dataset, photo_ids).select_for_update():
            after = tidy_caption(_edit(photo, dataset, op, find=find, replace=replace, text=text,
                                       case_sensitive=case_sensitive))
            if after != photo.caption:
                edits.append((photo, after))
        # A caption already over the limit (kept whole from a zip) may still be edited, only not lengthened.
        too_long = [(photo, after) for photo, after in edits if len(after) > max(MAX_CAPTION, len(photo.caption))]
        if too_long:
            raise ValidationError({BULK_TEXT_FIELD.get(op, "caption"): _too_long(too_long)})
        changes = []
        for photo, after in edits:
            changes.append(CaptionChange(photo.pk, photo.caption, after, photo.caption_source))
            if not dry_run:
                photo.caption, photo.caption_source = after, _bulk_source(op, photo, after)
                photo.save(update_fields=["caption", "caption_source"])
    return changes


# The request field a too-long result is reported under: the text the edit adds.
BULK_TEXT_FIELD = {"prepend": "text", "append": "text", "replace": "replace"}
TOO_LONG_NAMED = 10  # photos named in the refusal; the rest are counted


def _bulk_request_check(dataset: Dataset, op: str, *, find: str, replace: str, text: str) -> None:
    """Refuse a bulk edit that cannot be right before reading any caption."""
    if op not in BULK_OPS:
        raise ValidationError({"op": f"unknown edit {op!r}"})
    _require_text(find=find, replace=replace, text=text)
    for name, value in (("find", find), ("replace", replace), ("text", text)):
        if len(value) > MAX_CAPTION:
            raise ValidationError({name: f"{len(value)} characters is over a caption's limit of {MAX_CAPTION}"})
    if op == "replace" and not find:
        raise ValidationError({"find": "Say what text to find."})
    if op in ("prepend", "append") and not text.strip():
        raise ValidationError({"text": "Say what text to add."})
    if op == "insert_trigger" and not dataset.trigger_word:
        raise ValidationError({"trigger_word": "Set a trigger word first."})


def _too_long(edits: list[tuple[Photo, str]]) -> str:
    named = ", ".join(f"{photo.original_name} (#{photo.pk}, {len(after)} characters)"
                      for photo, after in edits[:TOO_LONG_NAMED])
    more = f" and {len(edits) - TOO_LONG_NAMED} more" if len(edits) > TOO_LONG_NAMED else ""
    captions = "1 caption" if len(edits) == 1 else f"{len(edits)} captions"
    return (f"Nothing was changed: this edit would make {captions} longer than the limit of {MAX_CAPTION} "
            f"characters: {named}{more}. Shorten {'it' if len(edits) == 1 else 'them'} or the text first.")


def captions_restore(
    *, dataset: Dataset, captions: dict[int, str], sources: dict[int, str] | None = None,
    expected: dict[int, str] | None = None,
) -> list[CaptionChange]:
    """Undo: put back the given captions (only on this dataset's photos) and their sources.

    `sources` holds the `before_source` of each change; a photo without a valid one is marked
    USER, the safe side (re-captioning will not replace it). `expected` holds the text each
    caption should read now (the change's `after`): a caption that reads otherwise was written,
    patched or re-captioned since the edit, and is left as it is; only the restored photos are
    in the result.
    """
    sources, expected = sources or {}, expected or {}
    for name, texts in (("captions", captions), ("expected", expected)):
        wrong = [str(pk) for pk, text in texts.items() if not isinstance(text, str)]
        if wrong:
            raise ValidationError({name: f"expected text (a string) for each photo, not for {', '.join(wrong)}"})
    # Not cut to MAX_CAPTION: what is put back is what was there (a zip's .txt may be longer),
    # though never longer than any stored caption can be.
    wanted = {pk: tidy_caption(text) for pk, text in captions.items()}
    huge = [str(pk) for pk, text in wanted.items() if len(text) > MAX_CAPTION_FILE]
    if huge:
        raise ValidationError({"captions": f"longer than any caption can be ({MAX_CAPTION_FILE} characters): {', '.join(huge)}"})
    changes = []
    with transaction.atomic():
        for photo in dataset.photos.filter(pk__in=list(wanted)).select_for_update():
            if photo.pk in expected and photo.caption != expected[photo.pk]:
                continue
            before, before_source = photo.caption, photo.caption_source
            after = wanted[photo.pk]
            source = sources.get(photo.pk)
            if not after:
                source = CaptionSource.NONE
            elif source not in CaptionSource.values or source == CaptionSource.NONE:
                source = CaptionSource.USER
            photo.caption, photo.caption_source = after, source
            photo.save(update_fields=["caption", "caption_source"])
            changes.append(CaptionChange(photo.pk, before, after, before_source))
    return changes


def _chosen(dataset: Dataset, photo_ids: Iterable[int] | None) -> QuerySet[Photo]:
    photos = dataset.photos.all()
    return photos if photo_ids is None else photos.filter(pk__in=list(photo_ids))
