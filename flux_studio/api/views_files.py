"""/files: photos uploaded through the API.

A file is a photo in one of your datasets. POST /files takes one or more images or .zip archives
(multipart, field `file`, repeatable) and runs them through the studio's photo ingest (the same
checks as the browser: really an image, not a bomb, big enough, not a duplicate). They land in
the dataset named by the `dataset` form field, or in your "API uploads" dataset. The answer lists
the accepted files and, per rejected file, the reason; the dataset id can be given to
POST /trainings directly.
"""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404

from flux_studio.api.auth import api_view
from flux_studio.api.common import Urls, paginated, parse_id
from flux_studio.api.problems import ApiError, field_error
from flux_studio.api.serializers import file_object
from flux_studio.files import serve_file
from trainer.datasets import dataset_create, photos_delete
from trainer.models import Dataset, Photo
from trainer.photos import upload_ingest

API_DATASET_NAME = "API uploads"
MAX_FILES_PER_REQUEST = 50


def _target_dataset(request: HttpRequest) -> Dataset:
    raw = request.POST.get("dataset", "")
    if raw:
        return get_object_or_404(Dataset, pk=parse_id(raw, "dataset"), owner=request.user)
    existing = Dataset.objects.filter(owner=request.user, name=API_DATASET_NAME).order_by("pk").first()
    return existing or dataset_create(owner=request.user, name=API_DATASET_NAME)


@api_view(("GET", "POST"))
def files(request: HttpRequest) -> HttpResponse:
    urls = Urls(request)
    if request.method == "POST":
        return _upload(request, urls)
    rows = Photo.objects.filter(dataset__owner=request.user)
    if request.GET.get("dataset"):
        rows = rows.filter(dataset_id=parse_id(request.GET["dataset"], "dataset"))
    return paginated(request, rows, lambda photo: file_object(photo, urls))


def _upload(request: HttpRequest, urls: Urls) -> JsonResponse:
    if not (request.content_type or "").startswith("multipart/form-data"):
        raise ApiError(415, "upload with multipart/form-data: one or more `file` fields (images or .zip)")
    uploads = request.FILES.getlist("file")
    if not uploads:
        raise field_error("file", "attach at least one image or .zip in a `file` field")
    if len(uploads) > MAX_FILES_PER_REQUEST:
        raise field_error("file", f"at most {MAX_FILES_PER_REQUEST} files per request (a .zip counts as one)")
    with transaction.atomic():
        dataset = _target_dataset(request)
    accepted, rejected = [], []
    for upload in uploads:
        for outcome in upload_ingest(dataset=dataset, upload=upload, name=upload.name or "upload", size=upload.size or 0):
            if outcome.ok:
                accepted.append(file_object(outcome.photo, urls))
            else:
                rejected.append({"name": outcome.name, "reason": outcome.reason})
    status = 201 if accepted else 422
    body = {"dataset": dataset.pk, "files": accepted, "rejected": rejected}
    if not accepted:
        # Still a problem document, with the per-file reasons, so a script sees why at once.
        reasons = "; ".join(f"{r['name']}: {r['reason']}" for r in rejected)
        return JsonResponse({"type": "https://flux-studio.local/problems/validation", "title": "Invalid input",
                             "status": 422, "detail": f"no file was accepted ({reasons})", **body},
                            status=422, content_type="application/problem+json")
    return JsonResponse(body, status=status)


def _own_photo(request: HttpRequest, pk: int) -> Photo:
    return get_object_or_404(Photo.objects.select_related("dataset"), pk=pk, dataset__owner=request.user)


@api_view(("GET", "DELETE"))
def file_detail(request: HttpRequest, pk: int) -> HttpResponse:
    photo = _own_photo(request, pk)
    if request.method == "DELETE":
        photos_delete(dataset=photo.dataset, photo_ids=[photo.pk])
        return HttpResponse(status=204)
    return JsonResponse(file_object(photo, Urls(request)))


@api_view(("GET",))
def file_download(request: HttpRequest, pk: int) -> HttpResponse:
    photo = _own_photo(request, pk)
    return serve_file(photo.original, download_name=photo.original_name, request=request)
