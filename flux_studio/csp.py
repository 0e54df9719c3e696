"""A Content-Security-Policy on every page: scripts, styles and fonts from this site only, no
inline code, no plugins, no framing, forms posting only here.

An injected `<script>` or `onclick=` in user text (a caption, a model description) would then not
run even if some template forgot to escape it. Images and videos may also come from the bucket
that stored files redirect to (S3 storage: a signed URL on another host); the live pages' socket
is this site's (`ws:`/`wss:` named with the host, for browsers whose `'self'` leaves them out).

A response that sets its own policy keeps it (stored files: a stricter, sandboxed one).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse


@lru_cache(maxsize=1)
def file_sources() -> str:
    """Origins stored files are redirected to: none for local storage; the S3 endpoint's."""
    if not settings.S3_BUCKET:
        return ""
    options = settings.STORAGES["default"].get("OPTIONS", {})
    endpoint = options.get("endpoint_url")
    if endpoint:
        parts = urlsplit(endpoint)
        return f" {parts.scheme}://{parts.netloc}"
    bucket, region = settings.S3_BUCKET, options.get("region_name") or "us-east-1"
    return (f" https://{bucket}.s3.amazonaws.com https://{bucket}.s3.{region}.amazonaws.com"
            f" https://s3.{region}.amazonaws.com https://s3.amazonaws.com")


def policy_for(request: HttpRequest) -> str:
    try:
        host = request.get_host()
        sockets = f" ws://{host} wss://{host}"
    except DisallowedHost:  # answered 400 already; its page needs no socket
        sockets = ""
    files = file_sources()
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src 'self' data: blob:{files}",
        f"media-src 'self'{files}",
        f"connect-src 'self'{sockets}",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


class ContentSecurityPolicyMiddleware:
    """Sync and async alike, so the API's event streams stay async under daphne."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if iscoroutinefunction(self):
            return self._acall(request)
        return self._with_policy(request, self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        return self._with_policy(request, await self.get_response(request))

    @staticmethod
    def _with_policy(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy_for(request)
        return response
