"""The decorator every API view wears: methods, authentication, rate limits, problem details.

Authentication is `Authorization: Bearer <token>`. A logged-in browser session is accepted too,
for reads only (GET/HEAD), so the download links inside API objects open in the browser that
shows them; writes need a token, which also keeps session writes safe from CSRF.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Callable

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import (
    ObjectDoesNotExist, PermissionDenied, RequestDataTooBig, SuspiciousOperation, ValidationError,
)
from django.http import Http404, HttpRequest, HttpResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt

from flux_studio.api.problems import ApiError, from_validation_error, problem_response
from flux_studio.api.tokens import token_authenticate
from flux_studio.env import env_int
from flux_studio.files import StoredFileMissing

log = logging.getLogger(__name__)

View = Callable[..., HttpResponse]
SAFE_METHODS = ("GET", "HEAD")
RATE_WINDOW_S = 60


def rate_limit_per_minute() -> int:
    # A settings value wins (tests lower it); otherwise the environment, default 600/min.
    return getattr(settings, "API_RATE_LIMIT_PER_MINUTE", None) or env_int("API_RATE_LIMIT_PER_MINUTE", 600, minimum=1)


def _bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "use the header 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    return value.strip()


def authenticate(request: HttpRequest, *, required: bool = True) -> None:
    """Set request.user (and request.api_token) from the token or session, or raise 401."""
    raw = _bearer(request)
    request.api_token = None
    if raw is not None:
        token = token_authenticate(raw=raw)
        if token is None:
            raise ApiError(401, "this token is unknown or was revoked; create one under /api/v1/tokens/",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        request.user = token.owner
        request.api_token = token
        return
    if request.user.is_authenticated and request.method in SAFE_METHODS:
        return
    if not required and request.method in SAFE_METHODS:
        return  # anonymous reads of public things (the gallery)
    raise ApiError(401, "send 'Authorization: Bearer <token>'; create a token under /api/v1/tokens/",
                   headers={"WWW-Authenticate": "Bearer"})


def check_rate_limit(request: HttpRequest) -> None:
    """A fixed one-minute window per token (or per session user) in Django's cache."""
    if getattr(request, "api_token", None):
        who = f"t{request.api_token.pk}"
    elif request.user.is_authenticated:
        who = f"u{request.user.pk}"
    else:
        who = f"ip{request.META.get('REMOTE_ADDR', '')}"
    window = int(time.time() // RATE_WINDOW_S)
    key = f"api-rate:{who}:{window}"
    cache.add(key, 0, RATE_WINDOW_S + 5)
    try:
        count = cache.incr(key)
    except ValueError:  # evicted between add and incr: start the window again
        cache.set(key, 1, RATE_WINDOW_S + 5)
        count = 1
    limit = rate_limit_per_minute()
    if count > limit:
        retry = max(1, math.ceil((window + 1) * RATE_WINDOW_S - time.time()))
        raise ApiError(429, f"more than {limit} requests in a minute with this token; retry in {retry} s",
                       headers={"Retry-After": str(retry)})


def unexpected_error(exc: Exception, request: HttpRequest) -> ApiError:
    """What a failure outside the view's own checks means to the caller.

    Django raises these while reading request.body / POST / FILES, i.e. inside the view: a body
    over DATA_UPLOAD_MAX_MEMORY_SIZE, too many fields or files, or a broken multipart body. Any
    other exception is a bug: logged with its traceback, answered with a generic 500.
    """
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return ApiError(413, f"the request body is too large (over {limit} bytes outside file parts); "
                             "send images as multipart `file` parts or in a .zip")
    if isinstance(exc, SuspiciousOperation):  # TooManyFieldsSent, TooManyFilesSent, ...
        return ApiError(400, f"the request was refused: {exc}")
    if isinstance(exc, (MultiPartParserError, UnreadablePostError)):
        return ApiError(400, f"the multipart body could not be read: {exc}")
    log.error("API error on %s %s", request.method, request.path, exc_info=exc)
    return ApiError(500, "an internal error happened; it was logged. Try again, or report it if it persists.")


def api_view(methods: tuple[str, ...], *, auth: str = "required") -> Callable[[View], View]:
    """Wrap a function view: allowed methods, auth, rate limit, and errors as problem JSON.

    auth: "required" (token, or session for reads), "optional" (anonymous reads allowed),
    "none" (the OpenAPI document: no auth, no rate limit).
    """
    allowed = tuple(methods) + (("HEAD",) if "GET" in methods else ())

    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            try:
                if request.method not in allowed:
                    raise ApiError(405, f"{request.method} is not allowed here; use {', '.join(methods)}",
                                   headers={"Allow": ", ".join(allowed)})
                if auth != "none":
                    authenticate(request, required=auth == "required")
                    check_rate_limit(request)
                response = view(request, *args, **kwargs)
                if response.status_code == 204 and "Content-Type" in response:
                    del response["Content-Type"]  # no content, so no type (Django sets text/html)
                return response
            except ApiError as exc:
                return problem_response(exc, request)
            except ValidationError as exc:
                return problem_response(from_validation_error(exc), request)
            except StoredFileMissing as exc:  # the caller's own object, whose file storage lost
                return problem_response(ApiError(410, str(exc)), request)
            except (Http404, ObjectDoesNotExist, PermissionError, PermissionDenied):
                # Someone else's object answers exactly like a missing one: ids are not oracles.
                return problem_response(ApiError(404, "no such object (or it is not yours)"), request)
            except Exception as exc:  # never Django's HTML page: a script gets JSON it can act on
                return problem_response(unexpected_error(exc, request), request)

        wrapper.api_methods = allowed  # type: ignore[attr-defined]
        return wrapper

    return decorate
