"""Account-level endpoints and pages: the token page, webhook secret and deliveries, docs, 404."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import pluralize
from django.views.decorators.http import require_POST

from flux_studio.api import openapi, tokens
from flux_studio.api.auth import api_view
from flux_studio.api.common import Urls, iso, paginated
from flux_studio.api.models import ApiToken, WebhookAttempt
from flux_studio.api.problems import ApiError


@api_view(("GET",), auth="none")
def openapi_document(request: HttpRequest) -> HttpResponse:
    return JsonResponse(openapi.document(server=Urls(request).base + "/api/v1"), json_dumps_params={"indent": 1})


def docs(request: HttpRequest) -> HttpResponse:
    """The OpenAPI document rendered as plain HTML (no scripts, no CDN)."""
    return render(request, "api/docs.html", {"doc": openapi.document(server=Urls(request).base + "/api/v1"),
                                             "operations": openapi.operations_for_docs(), "area": "api"})


@api_view(("GET", "POST", "PUT", "PATCH", "DELETE"), auth="none")
def not_found(request: HttpRequest) -> HttpResponse:
    raise ApiError(404, f"no API endpoint at {request.path}; see /api/v1/docs/")


@api_view(("GET",))
def account(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"type": "user", "username": request.user.username,
                         "token": request.api_token.name if request.api_token else None})


@api_view(("GET",))
def webhook_secret(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"key": tokens.webhook_secret_of(request.user)})


@api_view(("POST",))
def webhook_secret_rotate(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"key": tokens.webhook_secret_rotate(owner=request.user)})


def _attempt(row: WebhookAttempt) -> dict:
    message = row.message
    return {
        "id": row.pk, "webhook_id": message.msg_id, "event": message.event, "url": message.webhook.url,
        "object": {"kind": message.webhook.kind, "id": message.webhook.object_id}, "attempt": row.number,
        "status_code": row.status_code, "error": row.error or None, "duration_ms": row.duration_ms,
        "created_at": iso(row.created_at),
    }


@api_view(("GET",))
def webhook_deliveries(request: HttpRequest) -> HttpResponse:
    """The delivery log: one row per attempt, newest first."""
    rows = WebhookAttempt.objects.filter(message__webhook__owner=request.user).select_related("message__webhook")
    return paginated(request, rows, _attempt)


@login_required
def tokens_page(request: HttpRequest) -> HttpResponse:
    """Create and revoke tokens; a new token is shown once, on the page that created it.

    A refused name (the service's rules, as for POST /tokens) is answered beside the field, with
    what was typed still in it.
    """
    created, name, name_errors = None, "", []
    if request.method == "POST":
        name = request.POST.get("name", "")
        try:
            _, created = tokens.token_create(owner=request.user, name=name)
            name = ""
        except ValidationError as exc:
            name_errors = exc.messages  # each of token_create's refusals is about the name
    return render(request, "api/tokens.html", {
        "tokens": ApiToken.objects.filter(owner=request.user).select_related("created_by"), "created": created,
        "name": name, "name_errors": name_errors, "name_chars": tokens.NAME_CHARS,
        "webhook_secret": tokens.webhook_secret_of(request.user), "area": "api",
        "deliveries": WebhookAttempt.objects.filter(message__webhook__owner=request.user)
        .select_related("message__webhook").order_by("-id")[:20],
    }, status=400 if name_errors else 200)


@login_required
@require_POST
def token_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, owner=request.user)
    made = tokens.token_revoke(token=token)
    also = f" So are the {made} token{pluralize(made)} it made over the API." if made else ""
    messages.success(request, f"Token “{token.name}” is revoked; requests with it now fail.{also}")
    return redirect("api:tokens")


@login_required
@require_POST
def webhook_secret_rotate_view(request: HttpRequest) -> HttpResponse:
    tokens.webhook_secret_rotate(owner=request.user)
    messages.success(request, "The webhook secret is new; update your receivers.")
    return redirect("api:tokens")
