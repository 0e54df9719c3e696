"""Errors as RFC 9457 problem details: every API failure is JSON a script can act on."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, JsonResponse

PROBLEM_BASE = "https://flux-studio.local/problems/"
TITLES = {
    400: "Bad request", 401: "Authentication required", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 410: "Gone", 413: "Payload too large", 415: "Unsupported media type",
    422: "Invalid input", 429: "Too many requests", 500: "Internal error",
}


class ApiError(Exception):
    """Raise anywhere in a view to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, type_: str = "", errors: dict[str, list[str]] | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type_ or {400: "bad-request", 401: "unauthenticated", 404: "not-found", 405: "method-not-allowed",
                              403: "forbidden", 409: "conflict", 410: "gone", 413: "too-large", 415: "unsupported-media-type", 422: "validation", 429: "rate-limited",
                              500: "internal"}.get(status, "error")
        self.errors = errors or {}
        self.headers = headers or {}
        self.extra = extra or {}


def problem_response(exc: ApiError, request: HttpRequest | None = None) -> JsonResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + exc.type,
        "title": TITLES.get(exc.status, "Error"),
        "status": exc.status,
        "detail": exc.detail,
    }
    if request is not None:
        body["instance"] = request.path
    if exc.errors:
        body["errors"] = exc.errors
    body.update(exc.extra)
    response = JsonResponse(body, status=exc.status, content_type="application/problem+json")
    for name, value in exc.headers.items():
        response[name] = value
    return response


def from_validation_error(exc: ValidationError, *, field_map: dict[str, str] | None = None) -> ApiError:
    """A service's ValidationError as a 422 with per-field messages under the API's input names."""
    field_map = field_map or {}
    if hasattr(exc, "error_dict"):
        errors = {field_map.get(k, k): [str(m) for m in v] for k, v in exc.message_dict.items()}
        detail = "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items())
    else:
        errors = {}
        detail = " ".join(exc.messages)
    return ApiError(422, detail, errors=errors)


def field_error(field: str, message: str) -> ApiError:
    return ApiError(422, f"{field}: {message}", errors={field: [message]})


class FieldErrors:
    """The 422s of independent field checks, gathered to answer them all at once: a script sent
    three wrong settings learns of three, not of the first.

        errors = FieldErrors()
        with errors.check():
            steps = number(...)   # a 422 raised here is kept, and the next check runs
        errors.raise_if_any()
    """

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    @contextlib.contextmanager
    def check(self) -> Iterator[None]:
        try:
            yield
        except ApiError as exc:
            if exc.status != 422 or not exc.errors:
                raise
            for field, messages in exc.errors.items():
                self.errors.setdefault(field, []).extend(messages)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ApiError(422, "; ".join(f"{k}: {' '.join(v)}" for k, v in self.errors.items()), errors=self.errors)


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object, or a 400/415 that says what is wrong with it."""
    content_type = request.content_type or ""
    if content_type not in ("application/json", ""):
        raise ApiError(415, f"send JSON (Content-Type: application/json), not {content_type}")
    if not request.body:
        return {}
    return json_object(request.body)


def json_object(raw: bytes | str, what: str = "the body") -> dict[str, Any]:
    """Parse a JSON object (a body, or a multipart field holding JSON), refusing what cannot be stored."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, f"{what} is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"{what} must be a JSON object")
    if _has_nul(data):  # PostgreSQL cannot store it; say so instead of failing on save
        raise ApiError(422, f"text in {what} may not contain NUL (\\u0000) characters")
    return data


def _has_nul(data: Any) -> bool:
    """Any NUL in a key or string value (iterative: a deeply nested body cannot overflow it)."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str) and "\x00" in value:
            return True
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False
