"""Files sent to the API: run uploads through the photo checks, and find them again by URL.

`input_images` of a training is a URL, like Replicate's: the `urls.get` of a POST /files answer
(an upload: every photo it added, e.g. all of a zip) or of one file. Only URLs this studio handed
out are accepted, and only the caller's own; the studio never downloads from elsewhere, so a
training request cannot make it fetch arbitrary addresses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.urls import Resolver404, resolve

from flux_studio.api.models import FileUpload
from flux_studio.api.problems import field_error
from trainer.models import Dataset, Photo
from trainer.photos import upload_ingest

FIELD = "input.input_images"
URL_HINT = "the `urls.get` of a POST /files answer (an upload, e.g. a zip) or of one file"


def ingest_uploads(dataset: Dataset, uploads: list[UploadedFile]) -> tuple[list[Photo], list[dict[str, str]]]:
    """Run uploaded images and zips through the photo checks: the accepted photos, the rejections."""
    photos, rejected = [], []
    for upload in uploads:
        for outcome in upload_ingest(dataset=dataset, upload=upload, name=upload.name or "upload", size=upload.size or 0):
            if outcome.ok:
                photos.append(outcome.photo)
            else:
                rejected.append({"name": outcome.name, "reason": outcome.reason})
    return photos, rejected


def photos_from_url(owner: AbstractBaseUser, raw: Any, hosts: set[str]) -> list[Photo]:
    """The caller's photos behind an upload or file URL of this API, or a 422 saying why not."""
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 1000:
        raise field_error(FIELD, f"a URL: {URL_HINT}")
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https", "") or (parts.netloc and parts.netloc.lower() not in hosts):
        raise field_error(FIELD, f"not a URL of this studio; upload the zip with POST /files and give {URL_HINT} "
                                 "(the studio does not download from other sites)")
    try:
        match = resolve(parts.path)
    except Resolver404:
        match = None
    if match is None or match.namespace != "api" or match.url_name not in ("file_upload", "file", "file_download"):
        raise field_error(FIELD, f"not an upload or file URL; give {URL_HINT}")
    pk = match.kwargs["pk"]
    if match.url_name == "file_upload":
        upload = FileUpload.objects.filter(pk=pk, owner=owner).first()
        if upload is None:
            raise field_error(FIELD, "no such upload (or it is not yours)")
        photos = list(upload.photos.order_by("pk"))
        if not photos:
            raise field_error(FIELD, "the photos of that upload were all deleted since")
        return photos
    photo = Photo.objects.filter(pk=pk, dataset__owner=owner).first()
    if photo is None:
        raise field_error(FIELD, "no such file (or it is not yours)")
    return [photo]
