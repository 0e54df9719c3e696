"""/files: photos uploaded through the API.

A file is a photo in one of your datasets. POST /files takes one or more images or .zip archives
(multipart, field `file`, repeatable) and runs them through the studio's photo ingest (the same
checks as the browser: really an image, not a bomb, big enough, not a duplicate). They land in
the dataset named by the `dataset` form field, or in your "API uploads" dataset. The answer lists
the accepted files and, per rejected file, the reason. Its `urls.get` (GET /files/uploads/<id>)
can be given to POST /trainings as `input_images`, like a Replicate file URL; the dataset id and
the file ids can be given too. PATCH /files/{id} edits a photo's caption and `excluded` flag.
"""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404

from flux_studio.api.auth import api_view
from flux_studio.api.common import Urls, check_keys, paginated, parse_id
from flux_studio.api.problems import ApiError, field_error, json_body, problem_response
from flux_studio.api.models import FileUpload
from flux_studio.api.serializers import file_object, upload_object
from flux_studio.api.uploads import ingest_uploads
from flux_studio.files import serve_file
from trainer.datasets import MAX_CAPTION, dataset_create, photo_caption_set, photos_delete, photos_set_excluded
from trainer.models import Dataset, Photo
from trainer.photos import DatasetGone, dataset_gone, photos_discard, tidy_caption

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
    photos, rejected = ingest_uploads(dataset, uploads)
    try:
        with transaction.atomic():
            # Locked, so the dataset cannot be deleted between this check and the upload's row.
            if not Dataset.objects.select_for_update().filter(pk=dataset.pk).exists():
                raise DatasetGone()
            upload = _record(request, dataset, uploads, photos, rejected) if photos else None
    except (DatasetGone, IntegrityError):
        if not dataset_gone(dataset):
            raise
        # The delete took the photo rows with it; their files go too.
        photos_discard(photos, owner_id=dataset.owner_id)
        raise ApiError(404, f"dataset {dataset.pk} was deleted while the upload ran; none of the files were kept "
                            "(upload them again into another dataset)") from None
    if upload is None:
        # A problem document with the per-file reasons, so a script sees why at once. An "API
        # uploads" dataset made for it stays (empty): another upload may be filling it right now.
        reasons = "; ".join(f"{r['name']}: {r['reason']}" for r in rejected)
        detail = f"no file was accepted ({reasons})"
        return problem_response(ApiError(422, detail, errors={"file": [detail]}, extra={
            "dataset": dataset.pk, "files": [], "rejected": rejected}), request)
    return JsonResponse(upload_object(upload, urls), status=201)


def _record(request: HttpRequest, dataset: Dataset, uploads: list[UploadedFile], photos: list[Photo],
            rejected: list[dict[str, str]]) -> FileUpload:
    upload = FileUpload.objects.create(owner=request.user, dataset=dataset, rejected=rejected,
                                       name=", ".join(u.name or "upload" for u in uploads)[:255])
    upload.photos.set(photos)
    return upload


@api_view(("GET",))
def file_upload(request: HttpRequest, pk: int) -> HttpResponse:
    upload = get_object_or_404(FileUpload, pk=pk, owner=request.user)
    return JsonResponse(upload_object(upload, Urls(request)))


def _own_photo(request: HttpRequest, pk: int) -> Photo:
    return get_object_or_404(Photo.objects.select_related("dataset"), pk=pk, dataset__owner=request.user)


def _edit(photo: Photo, data: dict[str, Any]) -> Photo:
    """PATCH: `caption` (what the photo trains with; "" clears it) and `excluded` (kept in the
    dataset but not trained on), as the dataset page's caption box and exclude toggle."""
    check_keys(data, ("caption", "excluded"), where="body")
    if not data:
        raise ApiError(422, "nothing to change; give `caption` and/or `excluded`")
    caption, excluded = data.get("caption"), data.get("excluded")
    if "caption" in data and (not isinstance(caption, str) or len(tidy_caption(caption)) > MAX_CAPTION):
        raise field_error("caption", f"a string of at most {MAX_CAPTION} characters")
    if "excluded" in data and not isinstance(excluded, bool):
        raise field_error("excluded", "true or false")
    with transaction.atomic():
        if isinstance(caption, str):
            photo_caption_set(photo=photo, caption=caption)  # marked as yours: auto-captioning keeps it
        if isinstance(excluded, bool):
            photos_set_excluded(dataset=photo.dataset, photo_ids=[photo.pk], excluded=excluded)
    photo.refresh_from_db()
    return photo


@api_view(("GET", "PATCH", "DELETE"))
def file_detail(request: HttpRequest, pk: int) -> HttpResponse:
    photo = _own_photo(request, pk)
    if request.method == "DELETE":
        photos_delete(dataset=photo.dataset, photo_ids=[photo.pk])
        return HttpResponse(status=204)
    if request.method == "PATCH":
        photo = _edit(photo, json_body(request))
    return JsonResponse(file_object(photo, Urls(request)))


@api_view(("GET",))
def file_download(request: HttpRequest, pk: int) -> HttpResponse:
    photo = _own_photo(request, pk)
    return serve_file(photo.original, download_name=photo.original_name, request=request)


# The other stored versions of a photo: the copy that trains (upright, metadata such as location
# stripped; what a dataset export holds) and the grid's thumbnail.
FILE_VERSIONS = {"image": "image", "thumbnail": "thumbnail"}


@api_view(("GET",))
def file_download_version(request: HttpRequest, pk: int, version: str) -> HttpResponse:
    photo = _own_photo(request, pk)
    if version not in FILE_VERSIONS:
        raise ApiError(404, f"no such version; one of {', '.join(FILE_VERSIONS)} (the original is `download`)")
    field = getattr(photo, FILE_VERSIONS[version])
    stem = photo.original_name.rsplit(".", 1)[0] or "photo"
    suffix = field.name.rsplit(".", 1)[-1] if "." in field.name else "jpg"
    return serve_file(field, download_name=f"{stem}-{version}.{suffix}", request=request)
