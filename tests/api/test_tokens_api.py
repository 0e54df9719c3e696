"""/tokens over the API: list (never a secret), create (the secret once), read, revoke; someone
else's token answers 404 like a missing one; a token may revoke itself."""

from __future__ import annotations

import pytest

from flux_studio.api.models import ApiToken
from flux_studio.api.tokens import MAX_TOKENS, token_create
from tests.api.conftest import ApiClient, all_pages

pytestmark = pytest.mark.django_db


def test_create_a_token_shows_its_secret_once_and_it_works(alice_api, alice_token):
    created = alice_api.post("/api/v1/tokens", {"name": "  nightly   training job "})
    assert created.status_code == 201, created.content
    body = created.json()
    secret = body["token"]
    assert secret.startswith("fst_") and secret.startswith(body["prefix"]) and len(body["prefix"]) < len(secret) // 3
    assert body["name"] == "nightly training job" and body["active"] is True and body["current"] is False
    assert body["last_used_at"] is None and body["revoked_at"] is None
    assert body["urls"]["get"].endswith(f"/api/v1/tokens/{body['id']}")

    fresh = ApiClient(secret)
    assert fresh.get("/api/v1/account").json() == {"type": "user", "username": "alice", "token": "nightly training job"}
    again = fresh.get(body["urls"]["get"]).json()
    assert again["current"] is True and again["last_used_at"] is not None and "token" not in again
    listing = alice_api.get("/api/v1/tokens").content.decode()
    assert secret not in listing and alice_token not in listing and "hash" not in listing


def test_list_shows_only_your_tokens_newest_first_and_pages(alice, alice_api, bob_api):
    for number in range(4):
        token_create(owner=alice, name=f"script {number}")
    page = alice_api.get("/api/v1/tokens").json()
    assert [row["name"] for row in page["results"]] == ["script 3", "script 2", "script 1", "script 0", "alice script"]
    assert [row["current"] for row in page["results"]] == [False] * 4 + [True]
    assert set(page["results"][0]) == {"id", "name", "prefix", "active", "current", "created_at", "last_used_at",
                                       "revoked_at", "created_by", "urls"}
    assert all_pages(alice_api, "/api/v1/tokens", page_size=2) == [row["id"] for row in page["results"]]
    assert [row["name"] for row in bob_api.get("/api/v1/tokens").json()["results"]] == ["bob script"]


def test_each_token_says_which_token_made_it(alice, alice_api, alice_client):
    """A token made over the API names the token that made it (a leaked one's offspring can be
    found and revoked); one made on the page names none. The page shows the same."""
    maker = ApiToken.objects.get(owner=alice, name="alice script")
    made = alice_api.post("/api/v1/tokens", {"name": "made by a script"}).json()
    assert made["created_by"] == maker.pk
    assert alice_api.get(made["urls"]["get"]).json()["created_by"] == maker.pk
    assert alice_api.get(f"/api/v1/tokens/{maker.pk}").json()["created_by"] is None  # made on the page
    page = alice_client.get("/api/v1/tokens/").content.decode()
    row = page[page.index("made by a script"):].split("</tr>", 1)[0]
    assert f"{maker.prefix}…</code> (alice script)" in row
    assert "this page" in page[page.index(">alice script<"):].split("</tr>", 1)[0]


def test_revoke_another_token_then_it_is_listed_as_revoked(alice, alice_api):
    _, laptop_secret = token_create(owner=alice, name="laptop")
    laptop = ApiClient(laptop_secret)
    laptop_id = laptop.get("/api/v1/tokens").json()["results"][0]["id"]
    assert laptop.get("/api/v1/account").status_code == 200

    revoked = alice_api.delete(f"/api/v1/tokens/{laptop_id}")
    assert revoked.status_code == 204 and "Content-Type" not in revoked, "no content, so no content type"
    assert laptop.get("/api/v1/account").status_code == 401
    row = alice_api.get(f"/api/v1/tokens/{laptop_id}").json()
    assert row["active"] is False and row["revoked_at"] is not None
    assert alice_api.delete(f"/api/v1/tokens/{laptop_id}").status_code == 204, "revoking again changes nothing"
    assert alice_api.get(f"/api/v1/tokens/{laptop_id}").json()["revoked_at"] == row["revoked_at"]
    assert alice_api.get("/api/v1/account").status_code == 200, "the caller's own token is untouched"


def test_revoking_a_leaked_token_revokes_the_tokens_it_made_and_theirs(alice, alice_token, alice_api, client):
    """A leaked token's spares (made with POST /tokens, and by them in turn) stop with it; the
    owner's other tokens, and a spare revoked earlier (its date), stay as they were."""
    spare = alice_api.post("/api/v1/tokens", {"name": "spare"}).json()
    spare_api = ApiClient(spare["token"])
    grandchild = spare_api.post("/api/v1/tokens", {"name": "spare of spare"}).json()
    gone = alice_api.post("/api/v1/tokens", {"name": "spare revoked before"}).json()
    assert alice_api.delete(f"/api/v1/tokens/{gone['id']}").status_code == 204
    gone_at = ApiToken.objects.get(pk=gone["id"]).revoked_at
    _, other_secret = token_create(owner=alice, name="laptop")  # made on the page
    leaked = ApiToken.objects.get(name="alice script")

    client.force_login(alice)
    response = client.post(f"/api/v1/tokens/{leaked.pk}/revoke/", follow=True)
    assert "So are the 2 tokens it made over the API." in response.content.decode()
    for secret in (alice_token, spare["token"], grandchild["token"]):
        assert ApiClient(secret).get("/api/v1/account").status_code == 401
    assert ApiToken.objects.get(pk=gone["id"]).revoked_at == gone_at
    assert ApiClient(other_secret).get("/api/v1/account").status_code == 200


def test_a_token_revoked_while_it_asks_for_a_spare_gets_none(alice):
    """POST /tokens authenticated just before its token was revoked: the creation, which takes
    turns with revocations, sees the revoke and refuses (the API answers 401)."""
    from flux_studio.api.tokens import TokenRevoked, token_revoke

    maker, _ = token_create(owner=alice, name="leaked")
    token_revoke(token=maker)
    with pytest.raises(TokenRevoked):
        token_create(owner=alice, name="spare", created_by=maker)
    assert not ApiToken.objects.filter(name="spare").exists()


def test_the_api_answers_401_when_the_token_is_revoked_mid_request(alice, alice_api, monkeypatch):
    from flux_studio.api import views_tokens
    from flux_studio.api.tokens import token_revoke

    name_of = views_tokens._name

    def revoked_meanwhile(data):  # the owner revokes it on the page while the request is under way
        token_revoke(token=ApiToken.objects.get(name="alice script"))
        return name_of(data)

    monkeypatch.setattr(views_tokens, "_name", revoked_meanwhile)
    response = alice_api.post("/api/v1/tokens", {"name": "spare"})
    assert response.status_code == 401 and not ApiToken.objects.filter(name="spare").exists()


def test_revoking_a_spare_over_the_api_leaves_its_maker(alice, alice_api):
    spare = alice_api.post("/api/v1/tokens", {"name": "spare"}).json()
    child = ApiClient(spare["token"]).post("/api/v1/tokens", {"name": "child"}).json()
    assert alice_api.delete(f"/api/v1/tokens/{spare['id']}").status_code == 204
    assert ApiClient(child["token"]).get("/api/v1/account").status_code == 401
    assert alice_api.get("/api/v1/account").status_code == 200


def test_a_token_may_revoke_itself(alice, alice_api):
    own_id = next(row["id"] for row in alice_api.get("/api/v1/tokens").json()["results"] if row["current"])
    assert alice_api.delete(f"/api/v1/tokens/{own_id}").status_code == 204
    after = alice_api.get("/api/v1/tokens")
    assert after.status_code == 401 and after.json()["status"] == 401
    assert ApiToken.objects.get(pk=own_id).revoked_at is not None


def test_someone_elses_token_answers_404_like_a_missing_one(alice, alice_api, bob_api, bob_token):
    bobs = ApiToken.objects.get(owner__username="bob")
    missing = alice_api.get("/api/v1/tokens/999999")
    assert missing.status_code == 404 and missing["Content-Type"] == "application/problem+json"
    for response in (alice_api.get(f"/api/v1/tokens/{bobs.pk}"), alice_api.delete(f"/api/v1/tokens/{bobs.pk}")):
        assert response.status_code == 404
        assert {k: v for k, v in response.json().items() if k != "instance"} == \
               {k: v for k, v in missing.json().items() if k != "instance"}
    assert bob_api.get("/api/v1/account").status_code == 200, "bob's token still works"
    assert "bob script" not in alice_api.get("/api/v1/tokens").content.decode()


@pytest.mark.parametrize("body, field", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": 7}, "name"),
    ({"name": None}, "name"),
    ({"name": "x" * 81}, "name"),
    ({"name": "ok", "scopes": ["read"]}, "body.scopes"),
])
def test_bad_token_requests_are_422_and_create_nothing(alice_api, body, field):
    response = alice_api.post("/api/v1/tokens", body)
    assert response.status_code == 422 and field in response.json()["errors"], response.json()
    assert ApiToken.objects.count() == 1


def test_at_most_fifty_active_tokens(alice, alice_api):
    for number in range(MAX_TOKENS - 1):
        token_create(owner=alice, name=f"t{number}")
    refused = alice_api.post("/api/v1/tokens", {"name": "one too many"})
    assert refused.status_code == 422 and "revoke one first" in refused.json()["errors"]["name"][0]
    oldest = ApiToken.objects.filter(owner=alice).exclude(name="alice script").order_by("pk").first()
    assert alice_api.delete(f"/api/v1/tokens/{oldest.pk}").status_code == 204
    assert alice_api.post("/api/v1/tokens", {"name": "one too many"}).status_code == 201


def test_writes_need_a_token_and_the_page_keeps_its_url(alice, alice_client, alice_api):
    assert ApiClient(None).get("/api/v1/tokens").status_code == 401
    assert alice_client.get("/api/v1/tokens").json()["results"][0]["current"] is False, "a session may read"
    assert alice_client.post("/api/v1/tokens", '{"name": "x"}', content_type="application/json").status_code == 401
    created = alice_api.post("/api/v1/tokens", {"name": "from a script"}).json()
    page = alice_client.get("/api/v1/tokens/")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/html")
    assert created["prefix"].encode() in page.content and b"from a script" in page.content
    alice_api.delete(created["urls"]["get"])
    assert b"revoked" in alice_client.get("/api/v1/tokens/").content
