"""Tokens: created once, stored as a hash, revocable; bearer and session auth; rate limits; errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.cache import cache

from flux_studio.api.models import ApiToken, hash_token
from flux_studio.api.tokens import MAX_TOKENS, token_create
from tests.api.conftest import ApiClient

pytestmark = pytest.mark.django_db


def test_no_token_is_a_401_problem(client):
    response = client.get("/api/v1/trainings")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 401 and body["title"] and "Bearer" in body["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_bad_scheme_and_unknown_token_are_401(alice):
    assert ApiClient("nope").get("/api/v1/trainings").status_code == 401
    c = ApiClient(None)
    assert c.get("/api/v1/trainings", headers={"Authorization": "Basic abc"}).status_code == 401


def test_token_is_stored_as_a_hash_and_marks_last_use(alice, alice_token, alice_api):
    row = ApiToken.objects.get(owner=alice)
    assert row.key_hash == hash_token(alice_token) and alice_token not in (row.key_hash, row.prefix)
    assert row.last_used_at is None
    assert alice_api.get("/api/v1/account").json()["username"] == "alice"
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_revoked_token_stops_working(alice, alice_token, alice_api):
    assert alice_api.get("/api/v1/trainings").status_code == 200
    alice_client = ApiClient(None).client
    alice_client.force_login(alice)
    token = ApiToken.objects.get(owner=alice)
    assert alice_client.post(f"/api/v1/tokens/{token.pk}/revoke/").status_code == 302
    assert alice_api.get("/api/v1/trainings").status_code == 401


def test_token_page_shows_a_new_token_once(alice_client, alice):
    response = alice_client.post("/api/v1/tokens/", {"name": "laptop"})
    assert response.status_code == 200
    token = ApiToken.objects.get(owner=alice, name="laptop")
    raw = response.context["created"]
    assert raw.startswith("fst_") and hash_token(raw) == token.key_hash and raw.encode() in response.content
    again = alice_client.get("/api/v1/tokens/")
    assert raw.encode() not in again.content and b"laptop" in again.content
    assert ApiClient(raw).get("/api/v1/account").status_code == 200



def test_token_page_refuses_a_too_long_name_next_to_the_field_and_keeps_it(alice_client, alice_api, alice):
    """The page and POST /tokens share one rule: a name over 80 characters is refused, never cut."""
    typed = "nightly training job on the big machine " * 3  # 120 characters
    response = alice_client.post("/api/v1/tokens/", {"name": typed})
    assert response.status_code == 400 and response.context["created"] is None
    assert list(ApiToken.objects.filter(owner=alice).values_list("name", flat=True)) == ["alice script"]
    html = response.content.decode()
    error = response.context["name_errors"]
    assert error == alice_api.post("/api/v1/tokens", {"name": typed}).json()["errors"]["name"], "the API's words"
    assert "at most 80 characters" in error[0]
    assert f'<p class="bad field-error" id="token-name-error">{error[0]}' in html
    assert f'value="{typed}"' in html and 'aria-invalid="true" aria-describedby="token-name-error"' in html
    assert not any(m.level_tag == "error" for m in response.context["messages"]), "beside the field, not a banner"

    exactly = "x" * 80
    assert alice_client.post("/api/v1/tokens/", {"name": exactly}).context["created"].startswith("fst_")
    assert ApiToken.objects.filter(owner=alice, name=exactly).exists()


def test_token_page_shows_the_limit_beside_the_name_too(alice_client, alice):
    for number in range(MAX_TOKENS):
        token_create(owner=alice, name=f"t{number}")
    response = alice_client.post("/api/v1/tokens/", {"name": "one too many"})
    assert response.status_code == 400 and ApiToken.objects.filter(owner=alice).count() == MAX_TOKENS
    assert "revoke one first" in response.context["name_errors"][0] and b'value="one too many"' in response.content

def test_token_page_needs_login_and_bob_cannot_revoke_alices(client, bob_client, alice, alice_token):
    assert client.get("/api/v1/tokens/").status_code == 302
    token = ApiToken.objects.get(owner=alice)
    assert bob_client.post(f"/api/v1/tokens/{token.pk}/revoke/").status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_session_may_read_but_not_write(alice_client):
    assert alice_client.get("/api/v1/trainings").status_code == 200
    assert alice_client.post("/api/v1/trainings", "{}", content_type="application/json").status_code == 401


def test_rate_limit_answers_429_with_retry_after(settings, alice_api, monkeypatch):
    from flux_studio.api import auth

    settings.API_RATE_LIMIT_PER_MINUTE = 3
    cache.clear()
    # Half a minute into a window, on a clock that stands still: the five requests share it.
    monkeypatch.setattr(auth, "time", SimpleNamespace(time=lambda: 1_800_000_030.0))
    codes = [alice_api.get("/api/v1/account").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = alice_api.get("/api/v1/account")
    assert limited.status_code == 429 and limited["Retry-After"] == "30", "the seconds left of the window"
    assert limited.json()["type"].endswith("rate-limited")


def test_unknown_path_and_wrong_method_are_json(alice_api):
    missing = alice_api.get("/api/v1/nothing/here")
    assert missing.status_code == 404 and missing.json()["status"] == 404
    wrong = alice_api.delete("/api/v1/trainings")
    assert wrong.status_code == 405 and "GET" in wrong["Allow"]


def test_bad_json_is_400(alice_api):
    response = alice_api.client.post("/api/v1/trainings", "{nope", content_type="application/json", headers=alice_api.headers)
    assert response.status_code == 400 and "JSON" in response.json()["detail"]
    assert alice_api.post("/api/v1/trainings", [1, 2]).status_code == 400


def test_webhook_secret_can_be_read_and_rotated(alice_api, bob_api):
    first = alice_api.get("/api/v1/webhooks/default/secret").json()["key"]
    assert first.startswith("whsec_") and first == alice_api.get("/api/v1/webhooks/default/secret").json()["key"]
    assert bob_api.get("/api/v1/webhooks/default/secret").json()["key"] != first
    rotated = alice_api.post("/api/v1/webhooks/default/secret/rotate").json()["key"]
    assert rotated != first and alice_api.get("/api/v1/webhooks/default/secret").json()["key"] == rotated
