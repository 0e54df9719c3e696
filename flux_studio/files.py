"""Where user files live in storage, and how they are served without public URLs."""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import uuid
from datetime import datetime
from pathlib import PurePosixPath

from django.conf import settings
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.cache import get_conditional_response
from django.utils.deconstruct import deconstructible
from django.utils.http import http_date


log = logging.getLogger(__name__)

try:  # what a storage backend raises when it cannot store or read a file
    from botocore.exceptions import BotoCoreError, ClientError

    STORAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, BotoCoreError, ClientError)
except ImportError:  # pragma: no cover (boto3 is a dependency; local storage raises OSError)
    STORAGE_ERRORS = (OSError,)


def delete_stored(fields: list[FieldFile]) -> None:
    """Remove the stored files of file fields whose rows are gone; one that fails is logged, not
    raised (nothing refers to it any more: a sweep or an admin can remove it later)."""
    for field in fields:
        if field and field.name:
            try:
                field.storage.delete(field.name)
            except OSError:
                log.warning("could not delete %s", field.name, exc_info=True)


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


# Published files may sit in shared caches, but only briefly and revalidated: after an unpublish
# a cache serves them for at most PUBLIC_MAX_AGE seconds more, then asks again and gets a 404.
PUBLIC_MAX_AGE = 300
PUBLIC_CACHE = f"public, max-age={PUBLIC_MAX_AGE}, must-revalidate"
# Private files: the owner's browser only, and not for long.
PRIVATE_CACHE = "private, max-age=300"
PRIVATE_REDIRECT_MAX_AGE = 60


def _redirect_max_age(storage: object, public: bool) -> int:
    """How long a redirect to a signed URL may be reused: well inside the URL's own lifetime.

    A cached redirect hands out the same URL until it expires, and the URL must still work when
    the last client to get it follows it.
    """
    lifetime = int(getattr(storage, "querystring_expire", 3600))
    wanted = PUBLIC_MAX_AGE if public else PRIVATE_REDIRECT_MAX_AGE
    return max(0, min(wanted, lifetime // 2))


def _signed_redirect(field: FieldFile, download_name: str | None, public: bool) -> HttpResponse:
    params = {"ResponseCacheControl": PUBLIC_CACHE if public else PRIVATE_CACHE}
    if download_name:
        params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
    response: HttpResponse = HttpResponseRedirect(field.storage.url(field.name, parameters=params))
    response["Cache-Control"] = f"{'public' if public else 'private'}, max-age={_redirect_max_age(field.storage, public)}"
    return response


def _validators(field: FieldFile) -> tuple[str, datetime]:
    """A strong-enough ETag (name, size, time) and Last-Modified, from one stat of the file."""
    modified = field.storage.get_modified_time(field.name)
    size = field.storage.size(field.name)
    digest = hashlib.sha256(f"{field.name}:{size}:{modified.timestamp()}".encode()).hexdigest()[:32]
    return f'"{digest}"', modified


class StoredFileMissing(Http404):
    """The row is there but storage lost its file: a page answers 404; the API says 410 (Gone)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the stored file of {name} is missing (storage lost it); delete it and upload it again")


def serve_file(field: FieldFile, *, download_name: str | None = None, public: bool = False,
               request: HttpRequest | None = None) -> HttpResponse:
    """Answer with a stored file after the caller has checked who may see it.

    Local storage: the bytes are streamed, with ETag and Last-Modified; given the request, a
    matching If-None-Match / If-Modified-Since gets a 304. S3: a redirect to a signed URL, so the
    bucket stays private; the URL's response carries the same Cache-Control. Published files
    may be cached by shared caches for PUBLIC_MAX_AGE seconds, then revalidated; private ones
    only by the owner's browser.
    """
    if settings.S3_BUCKET:
        return _signed_redirect(field, download_name, public)
    try:
        etag, modified = _validators(field)
        handle = field.open("rb")
    except FileNotFoundError:
        log.error("stored file %s is missing", field.name)
        raise StoredFileMissing(download_name or PurePosixPath(field.name).name) from None
    cache = PUBLIC_CACHE if public else PRIVATE_CACHE
    if request is not None:
        unchanged = get_conditional_response(request, etag=etag, last_modified=int(modified.timestamp()))
        if unchanged is not None:
            handle.close()
            unchanged["Cache-Control"] = cache
            return unchanged
    # The stored name's type first (the studio chose it: a photo's by its bytes), then the download's
    content_type = (mimetypes.guess_type(field.name)[0] or mimetypes.guess_type(download_name or "")[0]
                    or "application/octet-stream")
    response = FileResponse(
        handle,
        as_attachment=download_name is not None,
        filename=download_name or PurePosixPath(field.name).name,
        content_type=content_type,
    )
    response["Cache-Control"] = cache
    # A stored file is data, never a page of this site: no type guessing, and if a browser shows it
    # as a document anyway, it runs nothing and loads nothing (images still show in <img>).
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"
    response["ETag"] = etag
    response["Last-Modified"] = http_date(modified.timestamp())
    return response
