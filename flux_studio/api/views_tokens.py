"""/tokens: your API tokens over HTTP, as the token page (/api/v1/tokens/) manages them.

List them (never a secret: only a short prefix to tell them apart), create one (its secret is in
that answer only; the studio keeps a hash), read one, revoke one. A token may revoke itself: the
answer is 204 and its next request is a 401. Someone else's token answers 404, as a missing one.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404

from flux_studio.api import tokens
from flux_studio.api.auth import api_view
from flux_studio.api.common import Urls, check_keys, paginated
from flux_studio.api.models import ApiToken
from flux_studio.api.problems import ApiError, field_error, json_body
from flux_studio.api.serializers import token_object


def _object(request: HttpRequest, token: ApiToken, urls: Urls) -> dict[str, Any]:
    current = request.api_token is not None and request.api_token.pk == token.pk
    return token_object(token, urls, current=current)


def _name(data: dict[str, Any]) -> str:
    name = data.get("name")
    if name is None:
        raise field_error("name", "give the token a name (e.g. the script that will use it)")
    if not isinstance(name, str):
        raise field_error("name", f"a string of at most {tokens.NAME_CHARS} characters")
    return name  # blank or too long: the service refuses it, in the same words as the page


@api_view(("GET", "POST"))
def tokens_view(request: HttpRequest) -> HttpResponse:
    urls = Urls(request)
    if request.method == "POST":
        data = json_body(request)
        check_keys(data, ("name",), where="body")
        # The page's service: a blank or too-long name, or too many active tokens, is a ValidationError (422).
        try:
            token, raw = tokens.token_create(owner=request.user, name=_name(data), created_by=request.api_token)
        except tokens.TokenRevoked:
            raise ApiError(401, "this token was revoked", headers={"WWW-Authenticate": "Bearer"}) from None
        return JsonResponse({**_object(request, token, urls), "token": raw}, status=201)
    return paginated(request, ApiToken.objects.filter(owner=request.user), lambda token: _object(request, token, urls))


@api_view(("GET", "DELETE"))
def token_view(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, owner=request.user)
    if request.method == "DELETE":
        tokens.token_revoke(token=token)  # again: no change; the row stays, listed as revoked
        return HttpResponse(status=204)
    return JsonResponse(_object(request, token, Urls(request)))
