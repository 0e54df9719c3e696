"""/datasets: what the dataset studio page does, over HTTP.

A dataset is a set of photos with captions, a trigger word and a caption style. List, create,
read (with its photos and health), rename or restyle (PATCH), duplicate, export as a zip and
delete; bulk caption edits and their undo; auto-captioning (POST starts it, GET polls it). Photos are added with
POST /files (`dataset` form field: images or a zip with same-name .txt captions) and edited with
PATCH /files/{id} (caption, excluded). GET /trigger-words/check is the page's live trigger checker.
Every dataset is found with owner=request.user: someone else's answers 404, as a missing one.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404

from flux_studio.api import caption_undo
from flux_studio.api.auth import api_view
from flux_studio.api.common import Urls, check_keys, paginated, parse_id
from flux_studio.api.problems import ApiError, field_error, from_validation_error, json_body
from flux_studio.api.serializers import captioning_object, dataset_object
from flux_studio.api.streams import event_stream
from trainer import captions, datasets, selectors
from trainer.forms import CaptionStyleForm
from trainer.models import CaptionPlacement, Dataset
from trainer.trigger_words import trigger_advice

NAME_CHARS = 120
# The caption style fields of the web page's form (trainer.forms.CaptionStyleForm), with their limits.
STYLE_FIELDS = {"trigger_word": 40, "caption_placement": 8, "caption_prefix": 200, "caption_suffix": 200,
                "captioner": 200, "caption_prompt": 1000}
EDIT_KEYS = ("name", *STYLE_FIELDS)
BULK_KEYS = ("op", "ids", "find", "replace", "text", "case_sensitive", "dry_run")
FILE_OPS = ("exclude", "include", "delete")
MAX_TEXT = datasets.MAX_CAPTION
MAX_WORD = 200


def _datasets(request: HttpRequest) -> QuerySet[Dataset]:
    """The caller's datasets with the counts the objects show."""
    used = Q(photos__excluded=False)
    return Dataset.objects.filter(owner=request.user).annotate(
        photo_count=Count("photos"), training_count=Count("photos", filter=used),
        captioned_count=Count("photos", filter=used & ~Q(photos__caption="")),
    )


def _own(request: HttpRequest, pk: int) -> Dataset:
    return get_object_or_404(_datasets(request), pk=pk)


def _name(data: dict[str, Any], *, required: bool) -> str | None:
    if "name" not in data:
        if required:
            raise field_error("name", "give the dataset a name")
        return None
    name = data["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_CHARS:
        raise field_error("name", f"a non-blank string of at most {NAME_CHARS} characters")
    return name


def _apply_style(dataset: Dataset, data: dict[str, Any]) -> None:
    """The style fields given (others kept), checked by the web page's own form."""
    given = {key: data[key] for key in STYLE_FIELDS if key in data}
    if not given:
        return
    for key, value in given.items():
        if not isinstance(value, str):
            raise field_error(key, "a string")
        if len(value) > STYLE_FIELDS[key]:
            raise field_error(key, f"at most {STYLE_FIELDS[key]} characters")
    if "caption_placement" in given and given["caption_placement"] not in CaptionPlacement.values:
        raise field_error("caption_placement", f"one of {', '.join(CaptionPlacement.values)}")
    current = {key: getattr(dataset, key) for key in STYLE_FIELDS}
    form = CaptionStyleForm({**current, **given}, instance=dataset)
    if not form.is_valid():
        errors = {key: [str(m) for m in messages] for key, messages in form.errors.items()}
        raise ApiError(422, "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()), errors=errors)
    form.save()


def _create(request: HttpRequest, urls: Urls) -> JsonResponse:
    data = json_body(request)
    check_keys(data, EDIT_KEYS, where="body")
    name = _name(data, required=True)
    with transaction.atomic():  # a refused style leaves no dataset behind
        try:
            dataset = datasets.dataset_create(owner=request.user, name=name or "")
        except ValidationError as exc:
            raise from_validation_error(exc) from None
        _apply_style(dataset, data)
    return JsonResponse(dataset_object(_own(request, dataset.pk), urls, detail=True), status=201)


@api_view(("GET", "POST"))
def datasets_view(request: HttpRequest) -> HttpResponse:
    urls = Urls(request)
    if request.method == "POST":
        return _create(request, urls)
    return paginated(request, _datasets(request), lambda dataset: dataset_object(dataset, urls))


@api_view(("GET", "PATCH", "DELETE"))
def dataset_view(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _own(request, pk)
    if request.method == "DELETE":
        datasets.dataset_delete(dataset=dataset)  # trainings keep what they froze at launch
        return HttpResponse(status=204)
    if request.method == "PATCH":
        data = json_body(request)
        check_keys(data, EDIT_KEYS, where="body")
        if not data:
            raise ApiError(422, f"nothing to change; give any of: {', '.join(EDIT_KEYS)}")
        name = _name(data, required=False)
        with transaction.atomic():
            if name is not None:
                try:
                    datasets.dataset_rename(dataset=dataset, name=name)
                except ValidationError as exc:
                    raise from_validation_error(exc) from None
            _apply_style(dataset, data)
        dataset = _own(request, pk)
    return JsonResponse(dataset_object(dataset, Urls(request), detail=True))


@api_view(("GET",))
def dataset_events(request: HttpRequest, pk: int) -> HttpResponse:
    """The dataset's events (auto-captioning) as Server-Sent Events; the stream stays open."""
    return event_stream(request, _own(request, pk).topic)


@api_view(("POST",))
def dataset_duplicate(request: HttpRequest, pk: int) -> HttpResponse:
    """A copy with its own photo files, captions and style, to try changes freely."""
    dataset = _own(request, pk)
    data = json_body(request)
    check_keys(data, ("name",), where="body")
    copy = datasets.dataset_duplicate(dataset=dataset, name=(_name(data, required=False) or "").strip())
    return JsonResponse(dataset_object(_own(request, copy.pk), Urls(request), detail=True), status=201)


@api_view(("GET",))
def dataset_export(request: HttpRequest, pk: int) -> HttpResponse:
    """The training photos with same-name .txt captions (kohya / ai-toolkit layout), as the web's export."""
    dataset = _own(request, pk)
    stem = "".join(ch if ch.isalnum() else "_" for ch in dataset.name)[:60] or "dataset"
    return FileResponse(selectors.dataset_export_zip(dataset), as_attachment=True, filename=f"{stem}.zip",
                        content_type="application/zip")


def photo_ids(raw: Any, dataset: Dataset, field: str = "ids") -> list[int] | None:
    """A list of this dataset's photo ids (None when absent: all photos); unknown ids are an error."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise field_error(field, "a non-empty list of photo ids of this dataset (leave it out for all photos)")
    limit = settings.MAX_PHOTOS_PER_DATASET
    if len(raw) > limit:
        raise field_error(field, f"at most {limit} ids")
    ids = [parse_id(value, f"{field}[{index}]") for index, value in enumerate(raw)]
    known = set(dataset.photos.filter(pk__in=ids).values_list("pk", flat=True))
    unknown = [pk for pk in dict.fromkeys(ids) if pk not in known]
    if unknown:
        raise field_error(field, f"not photos of this dataset: {', '.join(map(str, unknown[:20]))}")
    return list(dict.fromkeys(ids))


def _string(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise field_error(key, f"a string of at most {MAX_TEXT} characters")
    return value


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise field_error(key, "true or false")
    return value


@api_view(("POST",))
def dataset_captions_bulk(request: HttpRequest, pk: int) -> HttpResponse:
    """One edit on many captions, as the page's bulk bar: replace (find/replace), prepend or
    append `text`, insert the trigger word, or fill empty captions from the template."""
    dataset = _own(request, pk)
    data = json_body(request)
    check_keys(data, BULK_KEYS, where="body")
    op = data.get("op")
    if op not in datasets.BULK_OPS:
        raise field_error("op", f"one of {', '.join(datasets.BULK_OPS)}")
    ids = photo_ids(data.get("ids"), dataset)
    dry_run = _flag(data, "dry_run")
    try:
        with transaction.atomic():  # the edit and what undoes it, together
            changes = datasets.captions_bulk_edit(
                dataset=dataset, op=op, photo_ids=ids, find=_string(data, "find"), replace=_string(data, "replace"),
                text=_string(data, "text"), case_sensitive=_flag(data, "case_sensitive"), dry_run=dry_run,
            )
            edit = None if dry_run else caption_undo.bulk_edit_record(dataset=dataset, op=op, changes=changes)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    undo = {"edit": edit.pk, "url": Urls(request).api("dataset_captions_undo", dataset.pk)} if edit else None
    return JsonResponse({"dataset": dataset.pk, "op": op, "dry_run": dry_run,
                         "changes": [change.as_dict() for change in changes], "undo": undo,
                         "counts": _caption_counts(dataset)})


@api_view(("POST",))
def dataset_captions_undo(request: HttpRequest, pk: int) -> HttpResponse:
    """The page's Undo for the last bulk edit made over the API: each caption's text and its former
    source come back (through the page's own restore service). `edit` (optional) is the bulk
    answer's `undo.edit`: then only that edit is undone, never a later one."""
    dataset = _own(request, pk)
    data = json_body(request)
    check_keys(data, ("edit",), where="body")
    edit_id = parse_id(data["edit"], "edit") if data.get("edit") is not None else None
    try:
        undone = caption_undo.bulk_edit_undo(dataset=dataset, edit_id=edit_id)
    except caption_undo.NothingToUndo as exc:
        raise ApiError(409, str(exc)) from None
    changes = [{**change.as_dict(), "after_source": undone.after_sources[change.id]} for change in undone.changes]
    return JsonResponse({"dataset": dataset.pk, "edit": undone.edit, "op": undone.op, "changes": changes,
                         "skipped": undone.skipped, "counts": _caption_counts(dataset)})


def _caption_counts(dataset: Dataset) -> dict[str, int]:
    captioned, total = selectors.caption_counts(dataset)
    return {"captioned": captioned, "training": total}


@api_view(("POST",))
def dataset_files_bulk(request: HttpRequest, pk: int) -> HttpResponse:
    """The page's photo bulk bar: exclude, include or delete the photos in `ids` in one request
    (all or nothing: an id that is not a photo of this dataset changes nothing and answers 422)."""
    dataset = _own(request, pk)
    data = json_body(request)
    check_keys(data, ("op", "ids"), where="body")
    op = data.get("op")
    if op not in FILE_OPS:
        raise field_error("op", f"one of {', '.join(FILE_OPS)}")
    if not data.get("ids"):  # never "all photos" by leaving it out: this one deletes
        raise field_error("ids", "a non-empty list of photo ids of this dataset")
    ids = photo_ids(data["ids"], dataset)
    with transaction.atomic():
        if op == "delete":
            count = datasets.photos_delete(dataset=dataset, photo_ids=ids)
        else:
            count = datasets.photos_set_excluded(dataset=dataset, photo_ids=ids, excluded=op == "exclude")
    captioned, total = selectors.caption_counts(dataset)
    return JsonResponse({"dataset": dataset.pk, "op": op, "ids": ids, "count": count,
                         "counts": {"photos": dataset.photos.count(), "captioned": captioned, "training": total}})


@api_view(("GET", "POST"))
def dataset_captioning(request: HttpRequest, pk: int) -> HttpResponse:
    """POST: caption the dataset's photos (or `ids`) on the GPU worker, as the page's
    "Auto-caption" button; captions you wrote or uploaded stay unless `overwrite`. GET: how the
    latest run is going (poll it; the photos' captions arrive in GET /datasets/{id})."""
    dataset = _own(request, pk)
    urls = Urls(request)
    if request.method == "GET":
        return JsonResponse(captioning_object(dataset, urls))
    data = json_body(request)
    check_keys(data, ("ids", "overwrite"), where="body")
    ids = photo_ids(data.get("ids"), dataset)
    overwrite = _flag(data, "overwrite")
    if not dataset.photos.filter(excluded=False).exists():
        raise field_error("dataset", "no photos to caption: upload some with POST /files (`dataset` field), "
                                     "or include excluded ones again")
    with transaction.atomic():
        captions.captions_enqueue(dataset=dataset, photo_ids=ids, overwrite=overwrite)
    answer = JsonResponse(captioning_object(dataset, urls), status=202)
    answer["Location"] = urls.api("dataset_captioning", dataset.pk)
    return answer


@api_view(("GET",))
def trigger_word_check(request: HttpRequest) -> HttpResponse:
    """The dataset page's live checker: errors block the word, warnings only advise."""
    word = request.GET.get("word")
    if word is None:
        raise field_error("word", "give the word to check, e.g. ?word=ZXQ_MIRA")
    if len(word) > MAX_WORD:
        raise field_error("word", f"at most {MAX_WORD} characters")
    base = request.GET.get("base_model") or settings.DEFAULT_BASE_MODEL
    if base not in settings.BASE_MODELS:
        raise field_error("base_model", f"one of {', '.join(settings.BASE_MODELS)}")
    advice = trigger_advice(word, base)
    return JsonResponse({"word": advice.word, "base_model": advice.base, "ok": advice.ok, "errors": advice.errors,
                         "warnings": advice.warnings, "notes": advice.notes,
                         "splits": [split.as_dict() for split in advice.splits]})
