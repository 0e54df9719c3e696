"""Small helpers shared by the API views: absolute URLs, pagination, input parsing."""

from __future__ import annotations

import base64
from typing import Any, Callable, Iterable

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from flux_studio.api.problems import ApiError, field_error
from flux_studio.env import env_str

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def public_base_url() -> str:
    """Where this studio is reachable, for URLs in webhook bodies (no request to ask)."""
    return (getattr(settings, "PUBLIC_URL", "") or env_str("PUBLIC_URL", "http://127.0.0.1:8000")).rstrip("/")


class Urls:
    """Builds absolute URLs from a request, or from PUBLIC_URL in a worker."""

    def __init__(self, request: HttpRequest | None = None) -> None:
        self.base = request.build_absolute_uri("/").rstrip("/") if request is not None else public_base_url()

    def api(self, name: str, *args: object) -> str:
        return self.base + reverse(f"api:{name}", args=args)

    def path(self, path: str) -> str:
        return self.base + path


def iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _encode_cursor(tag: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{tag}{value}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, tag: str) -> int:
    """Cursors are opaque to clients: "id<N" (keyset) or "off:N" (offset), base64-encoded."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(tag) or not text[len(tag):].isdigit() or len(text) > 40:
            raise ValueError
        return int(text[len(tag):])
    except (ValueError, UnicodeDecodeError):
        raise field_error("cursor", "not a cursor this API handed out; use the `next` URL as given") from None


def _page_url(request: HttpRequest, cursor: str) -> str:
    query = request.GET.copy()
    query["cursor"] = cursor
    return request.build_absolute_uri(request.path) + "?" + query.urlencode()


def page_size(request: HttpRequest) -> int:
    raw = request.GET.get("page_size", "")
    if not raw:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise field_error("page_size", f"a whole number from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def status_filtered(request: HttpRequest, queryset: QuerySet, statuses: dict[str, str]) -> QuerySet:
    """A newest-first list's rows, narrowed by `?status=` (one or more API statuses, comma-separated,
    e.g. `failed,canceled`); `statuses` maps each stored state to its API status. The list's query
    takes only `status`, `cursor` and `page_size`: a typo fails loudly, as a body's keys do."""
    check_keys(request.GET, ("status", "cursor", "page_size"), where="query")
    raw = request.GET.get("status")
    if raw is None:
        return queryset
    known = list(dict.fromkeys(statuses.values()))
    wanted = {part.strip() for part in raw.split(",") if part.strip()}
    if not wanted or wanted - set(known):
        raise field_error("status", f"one or more of {', '.join(known)}, comma-separated")
    return queryset.filter(state__in=[state for state, status in statuses.items() if status in wanted])


def paginated(request: HttpRequest, queryset: QuerySet, serialize: Callable[[Any], dict[str, Any]]) -> JsonResponse:
    """Keyset pagination, newest first: stable while new objects are created meanwhile."""
    size = page_size(request)
    rows = queryset.order_by("-pk")
    cursor = request.GET.get("cursor")
    if cursor:
        rows = rows.filter(pk__lt=_decode_cursor(cursor, "id<"))
    page = list(rows[: size + 1])
    next_url = None
    if len(page) > size:
        page = page[:size]
        next_url = _page_url(request, _encode_cursor("id<", page[-1].pk))
    return JsonResponse({"next": next_url, "previous": None, "results": [serialize(row) for row in page]})


def paginated_sorted(request: HttpRequest, queryset: QuerySet, serialize: Callable[[Any], dict[str, Any]]) -> JsonResponse:
    """Offset pagination for lists in another order than newest first (gallery sorts)."""
    size = page_size(request)
    cursor = request.GET.get("cursor")
    offset = _decode_cursor(cursor, "off:") if cursor else 0
    page = list(queryset[offset: offset + size + 1])
    next_url = _page_url(request, _encode_cursor("off:", offset + size)) if len(page) > size else None
    previous = _page_url(request, _encode_cursor("off:", max(0, offset - size))) if offset else None
    return JsonResponse({"next": next_url, "previous": previous, "results": [serialize(row) for row in page[:size]]})


def parse_id(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise field_error(field, "must be a positive integer id")
    number = int(value)
    if not 0 < number < 2**63:
        raise field_error(field, "must be a positive integer id")
    return number


def check_keys(data: dict[str, Any], allowed: Iterable[str], where: str = "input") -> None:
    """Typos fail loudly: an unknown key is an error, never silently ignored."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(422, f"unknown {where} field(s): {', '.join(unknown)}",
                       errors={f"{where}.{key}": ["unknown field"] for key in unknown})


def number(data: dict[str, Any], key: str, kind: type, *, low: float, high: float, field: str = "") -> Any:
    """An optional int/float from JSON within [low, high]; None when absent."""
    value = data.get(key)
    if value is None:
        return None
    label = field or key
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float) and not value.is_integer()):
        raise field_error(label, f"must be {'a whole number' if kind is int else 'a number'}")
    value = kind(value)
    if not low <= value <= high:
        raise field_error(label, f"must be between {low} and {high}")
    return value
