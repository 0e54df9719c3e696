"""Where user files live in storage, and how they are served without public URLs."""

from __future__ import annotations

import mimetypes
import uuid
from pathlib import PurePosixPath

from django.conf import settings
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, HttpResponse, HttpResponseRedirect
from django.utils.deconstruct import deconstructible


def owner_id_of(instance: object) -> int:
    for attr in ("owner_id", "dataset", "job", "generation", "gallery_model"):
        value = getattr(instance, attr, None)
        if isinstance(value, int):
            return value
        if value is not None and attr != "owner_id":
            return owner_id_of(value)
    raise ValueError(f"cannot tell who owns {instance!r}")


@deconstructible
class UserUploadPath:
    """users/<owner id>/<kind>/<random>.<ext>: unguessable, grouped by owner for clean-up."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, instance: object, filename: str) -> str:
        suffix = PurePosixPath(filename).suffix.lower()[:16]  # ".safetensors" must survive whole
        return f"users/{owner_id_of(instance)}/{self.kind}/{uuid.uuid4().hex}{suffix}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserUploadPath) and other.kind == self.kind


def serve_file(field: FieldFile, *, download_name: str | None = None, public: bool = False) -> HttpResponse:
    """Answer with a stored file after the caller has checked who may see it.

    Local storage: the bytes are streamed. S3: a redirect to a short-lived signed URL, so the
    bucket stays private. Public (published) files may be cached by browsers and proxies.
    """
    cache = "public, max-age=86400" if public else "private, max-age=3600"
    if settings.S3_BUCKET:
        params = {}
        if download_name:
            params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
        response: HttpResponse = HttpResponseRedirect(field.storage.url(field.name, parameters=params))
        response["Cache-Control"] = "private, max-age=60"
        return response
    content_type = mimetypes.guess_type(download_name or field.name)[0] or "application/octet-stream"
    response = FileResponse(
        field.open("rb"),
        as_attachment=download_name is not None,
        filename=download_name or PurePosixPath(field.name).name,
        content_type=content_type,
    )
    response["Cache-Control"] = cache
    return response
