"""Dataset studio pages and the small JSON endpoints its grid calls.

Every view finds the dataset with owner=request.user, so another person's dataset, photos,
thumbnails and exports are a 404 (not a 403: we do not confirm that they exist).
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST

from flux_studio.files import serve_file
from trainer import captions, datasets, photos, selectors
from trainer.engine.captioning.presets import DEFAULT_VLM_PROMPT, FLORENCE_TASKS
from trainer.forms import CaptionStyleForm, DatasetNameForm, offered_captioners
from trainer.trigger_words import TRIGGER_ADVICE, TriggerAdvice, trigger_advice
from trainer.models import Dataset, Photo

PHOTO_FILES = {"thumb": "thumbnail", "image": "image", "original": "original"}


def _own_dataset(request: HttpRequest, pk: int) -> Dataset:
    return get_object_or_404(Dataset, pk=pk, owner=request.user)


def _own_photo(request: HttpRequest, pk: int, photo_pk: int) -> Photo:
    return get_object_or_404(Photo.objects.select_related("dataset"), pk=photo_pk, dataset__pk=pk, dataset__owner=request.user)


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise ValidationError({"body": "expected a JSON object"}) from None
    if not isinstance(body, dict):
        raise ValidationError({"body": "expected a JSON object"})
    return body


def _ids(body: dict[str, Any]) -> list[int] | None:
    raw = body.get("ids")
    if raw is None:
        return None
    # a list of whole numbers only: "12" would otherwise read as photos 1 and 2, 1.5 as photo 1
    if not isinstance(raw, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
        raise ValidationError({"ids": "expected a list of photo ids, e.g. [12, 15]"})
    return raw


def _by_photo(body: dict[str, Any], key: str) -> dict[int, Any]:
    """`{photo id: value}` from the body, the ids as numbers; the values are checked by the
    service (a caption that is not text is refused there, never stored as "['x']" or "None")."""
    try:
        return {int(k): v for k, v in dict(body.get(key) or {}).items()}
    except (TypeError, ValueError):
        raise ValidationError({key: "expected {photo id: text}"}) from None


def _error(exc: ValidationError, status: int = 400) -> JsonResponse:
    detail = exc.message_dict if hasattr(exc, "message_dict") else {"error": exc.messages}
    text = "; ".join(" ".join(v) for v in detail.values())
    return JsonResponse({"ok": False, "error": text, "fields": detail}, status=status)


def _counts(dataset: Dataset) -> dict[str, int]:
    captioned, total = selectors.caption_counts(dataset)
    return {"captioned": captioned, "total": total}


# --- pages -------------------------------------------------------------------------------


@login_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    form = DatasetNameForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        dataset = datasets.dataset_create(owner=request.user, name=form.cleaned_data["name"])
        return redirect(dataset)
    return render(request, "trainer/dataset_list.html", {
        "datasets": selectors.datasets_for(request.user), "form": form, "area": "datasets",
    })


@login_required
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _own_dataset(request, pk)
    photo_rows = list(dataset.photos.all())
    # The live view replays events after this id; the latest run is read after it, so a run's
    # news written in between is replayed rather than missed.
    last_event_id = selectors.last_event_id(dataset)
    return render(request, "trainer/dataset_detail.html", {
        "dataset": dataset, "photos": photo_rows, "health": selectors.dataset_health(dataset),
        "style_form": CaptionStyleForm(instance=dataset), "advice": trigger_advice(dataset.trigger_word),
        "trigger_help": TRIGGER_ADVICE, "counts": _counts(dataset), "area": "datasets",
        "default_captioner": settings.CAPTIONER, "captioner_choices": offered_captioners(),
        "default_caption_prompt": settings.CAPTION_PROMPT or DEFAULT_VLM_PROMPT,
        "florence_tasks": FLORENCE_TASKS,
        "template_caption": datasets.template_text(dataset),
        "max_photo_mb": settings.MAX_PHOTO_MB, "max_photos": settings.MAX_PHOTOS_PER_DATASET,
        "formats": photos.FORMAT_NAMES, "last_event_id": last_event_id,
        "captioning": captions.captioning_latest(dataset),
    })


@login_required
@require_POST
def dataset_rename(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _own_dataset(request, pk)
    try:
        datasets.dataset_rename(dataset=dataset, name=request.POST.get("name", ""))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    # Renamed from the list page: go back there, not into the dataset.
    return redirect("trainer:dataset_list" if request.POST.get("next") == "list" else dataset)


@login_required
@require_POST
def dataset_delete(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _own_dataset(request, pk)
    name = dataset.name
    datasets.dataset_delete(dataset=dataset)
    messages.success(request, f"Deleted “{name}”.")
    return redirect("trainer:dataset_list")


@login_required
@require_POST
def dataset_duplicate(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _own_dataset(request, pk)
    try:
        copy = datasets.dataset_duplicate(dataset=dataset)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(dataset)
    messages.success(request, f"Made “{copy.name}”: change it freely, the original stays as it was.")
    return redirect(copy)


@login_required
@require_GET
def dataset_export(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _own_dataset(request, pk)
    stem = "".join(ch if ch.isalnum() else "_" for ch in dataset.name)[:60] or "dataset"
    return FileResponse(selectors.dataset_export_zip(dataset), as_attachment=True, filename=f"{stem}.zip",
                        content_type="application/zip")


@login_required
@require_GET
def dataset_health(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _own_dataset(request, pk)
    return render(request, "trainer/dataset_health.html", {"dataset": dataset, "health": selectors.dataset_health(dataset)})


# --- photos ------------------------------------------------------------------------------


@login_required
@require_POST
def photo_upload(request: HttpRequest, pk: int) -> JsonResponse:
    """One file per request (the page sends 2-3 at a time), answered per photo in JSON."""
    dataset = _own_dataset(request, pk)
    upload = request.FILES.get("file")
    if upload is None:
        return JsonResponse({"ok": False, "error": "no file was sent"}, status=400)
    outcomes = photos.upload_ingest(dataset=dataset, upload=upload, name=upload.name or "photo", size=upload.size or 0)
    if photos.dataset_gone(dataset):
        # Deleted while this file was being stored: the photos went with it, their files go now.
        photos.photos_discard([o.photo for o in outcomes if o.photo is not None], owner_id=dataset.owner_id)
        return JsonResponse({"ok": False, "error": f"This dataset was deleted while {upload.name or 'the file'} was uploading; "
                                                   "nothing was kept.",
                             "results": [{"name": o.name, "ok": False, "reason": photos.DATASET_GONE, "warnings": []}
                                         for o in outcomes],
                             "counts": {"captioned": 0, "total": 0}}, status=404)
    results = []
    for outcome in outcomes:
        row: dict[str, Any] = {"name": outcome.name, "ok": outcome.ok, "reason": outcome.reason, "warnings": outcome.warnings}
        if outcome.photo is not None:
            row["photo"] = selectors.photo_payload(outcome.photo)
            row["html"] = render_to_string("trainer/dataset_photo_card.html", {"photo": outcome.photo, "dataset": dataset})
        results.append(row)
    accepted = sum(1 for r in results if r["ok"])
    # 422 when nothing was kept, so the page can offer a retry; partial zips are still a 200.
    return JsonResponse({"ok": accepted > 0, "results": results, "counts": _counts(dataset)}, status=200 if accepted else 422)


@login_required
@require_GET
def photo_file(request: HttpRequest, pk: int, photo_pk: int, kind: str) -> HttpResponse:
    photo = _own_photo(request, pk, photo_pk)
    if kind not in PHOTO_FILES:
        raise Http404("unknown file")
    download = photo.original_name if kind == "original" and request.GET.get("download") else None
    return serve_file(getattr(photo, PHOTO_FILES[kind]), download_name=download)


@login_required
@require_POST
def photo_caption(request: HttpRequest, pk: int, photo_pk: int) -> JsonResponse:
    """Save a caption typed on the page. `was`, when sent, is the caption the edit started from:
    if the stored one differs (changed in another tab, by a bulk edit or by auto-captioning since),
    the save is refused (409) with the stored caption, so no one's edit is lost unseen."""
    _own_photo(request, pk, photo_pk)
    try:
        body = _json_body(request)
        with transaction.atomic():
            # the photo's row only: a dataset delete locks the dataset, then removes its photos
            photo = Photo.objects.select_for_update(of=("self",)).select_related("dataset").filter(pk=photo_pk).first()
            if photo is None:
                raise Http404("no such photo")  # deleted meanwhile
            was, caption = body.get("was"), body.get("caption", "")
            changed_since = isinstance(was, str) and photos.tidy_caption(was) != photo.caption
            # (sending what is stored already is no conflict: a save repeated, or the same edit twice)
            if changed_since and not (isinstance(caption, str) and photos.tidy_caption(caption) == photo.caption):
                return JsonResponse({"ok": False, "conflict": True, "photo": selectors.photo_payload(photo),
                                     "error": "changed elsewhere (another tab, a bulk edit or auto-captioning)"},
                                    status=409)
            datasets.photo_caption_set(photo=photo, caption=caption)
    except ValidationError as exc:
        return _error(exc)
    return JsonResponse({"ok": True, "photo": selectors.photo_payload(photo), "counts": _counts(photo.dataset)})


@login_required
@require_POST
def photos_action(request: HttpRequest, pk: int) -> JsonResponse:
    """delete / exclude / include the photos in `ids`."""
    dataset = _own_dataset(request, pk)
    try:
        body = _json_body(request)
        ids = _ids(body) or []
    except ValidationError as exc:
        return _error(exc)
    action = body.get("action")
    if action == "delete":
        count = datasets.photos_delete(dataset=dataset, photo_ids=ids)
    elif action in ("exclude", "include"):
        count = datasets.photos_set_excluded(dataset=dataset, photo_ids=ids, excluded=action == "exclude")
    else:
        return JsonResponse({"ok": False, "error": "action must be delete, exclude or include"}, status=400)
    return JsonResponse({"ok": True, "count": count, "counts": _counts(dataset)})


# --- captions ----------------------------------------------------------------------------


@login_required
@require_POST
def captions_bulk(request: HttpRequest, pk: int) -> JsonResponse:
    """Find/replace, prepend, append, insert the trigger, or fill templates; dry_run previews."""
    dataset = _own_dataset(request, pk)
    try:
        body = _json_body(request)
        # Not str(): a list or null must be refused (by the service), not stored as "['x']".
        changes = datasets.captions_bulk_edit(
            dataset=dataset, op=body.get("op", ""), photo_ids=_ids(body), find=body.get("find", ""),
            replace=body.get("replace", ""), text=body.get("text", ""),
            case_sensitive=bool(body.get("case_sensitive")), dry_run=bool(body.get("dry_run")),
        )
    except ValidationError as exc:
        return _error(exc)
    return JsonResponse({"ok": True, "dry_run": bool(body.get("dry_run")), "changes": [c.as_dict() for c in changes],
                         "counts": _counts(dataset)})


@login_required
@require_POST
def captions_restore(request: HttpRequest, pk: int) -> JsonResponse:
    dataset = _own_dataset(request, pk)
    try:
        body = _json_body(request)
        wanted, sources, expected = (_by_photo(body, key) for key in ("captions", "sources", "expected"))
        changes = datasets.captions_restore(dataset=dataset, captions=wanted, sources=sources, expected=expected)
    except ValidationError as exc:
        return _error(exc)
    restored = {change.id for change in changes}
    present = set(dataset.photos.filter(pk__in=list(wanted)).values_list("pk", flat=True))
    return JsonResponse({"ok": True, "changes": [c.as_dict() for c in changes], "counts": _counts(dataset),
                         "kept": [pk for pk in wanted if pk in present and pk not in restored]})


@login_required
@require_POST
def captions_auto(request: HttpRequest, pk: int) -> JsonResponse:
    """Queue auto-captions for all photos or `ids`; results arrive as live events."""
    dataset = _own_dataset(request, pk)
    try:
        body = _json_body(request)
        ids = _ids(body)
    except ValidationError as exc:
        return _error(exc)
    captions.captions_enqueue(dataset=dataset, photo_ids=ids, overwrite=bool(body.get("overwrite")))
    return JsonResponse({"ok": True, "queued": True})


# --- trigger word and caption style ------------------------------------------------------


@login_required
@require_GET
def trigger_check(request: HttpRequest, pk: int) -> JsonResponse:
    _own_dataset(request, pk)
    base = request.GET.get("base") or settings.DEFAULT_BASE_MODEL
    if base not in settings.BASE_MODELS:
        return JsonResponse({"ok": False, "error": f"{base!r} is not a base model offered here"}, status=400)
    return JsonResponse(_advice_json(trigger_advice(request.GET.get("word", ""), base)))


def _advice_json(advice: TriggerAdvice) -> dict[str, Any]:
    """The advice as the page shows it: blocking errors, warnings, and how each of the base's
    tokenizers splits the word."""
    return {"ok": advice.ok, "base": advice.base, "errors": advice.errors, "warnings": advice.warnings,
            "notes": advice.notes, "splits": [split.as_dict() for split in advice.splits]}


@login_required
@require_POST
def dataset_style(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _own_dataset(request, pk)
    form = CaptionStyleForm(request.POST, instance=dataset)
    wants_json = request.headers.get("Accept", "").startswith("application/json")
    if not form.is_valid():
        if wants_json:
            return JsonResponse({"ok": False, "error": "; ".join(" ".join(v) for v in form.errors.values()),
                                 "fields": form.errors}, status=400)
        messages.error(request, "; ".join(" ".join(v) for v in form.errors.values()))
        return redirect(dataset)
    dataset = form.save()
    if wants_json:
        advice = _advice_json(trigger_advice(dataset.trigger_word))
        return JsonResponse({**advice, "ok": True, "trigger_word": dataset.trigger_word,
                             "template_caption": datasets.template_text(dataset)})
    messages.success(request, "Saved the trigger word and caption style.")
    return redirect(dataset)
