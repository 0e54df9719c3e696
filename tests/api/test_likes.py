"""Likes over the API: like/unlike published models, the count and `liked` as the gallery page shows them."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.api.conftest import ApiClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(alice_api, alice, finished_job) -> dict:
    response = alice_api.post("/api/v1/models", {"training": finished_job(alice).pk, "title": "Zqx"})
    assert response.status_code == 201, response.content
    return response.json()


def test_like_and_unlike_show_on_the_model_and_its_web_page(published, bob_api, bob):
    url = f"/api/v1/models/{published['id']}"
    assert published["like_count"] == 0 and published["liked"] is False
    assert published["urls"]["like"].endswith(f"{url}/like")
    liked = bob_api.post(f"{url}/like")
    assert liked.status_code == 200, liked.content
    assert liked.json()["like_count"] == 1 and liked.json()["liked"] is True
    assert bob_api.post(f"{url}/like").json()["like_count"] == 1, "a second like counts nothing"
    assert bob_api.get(url).json()["liked"] is True
    assert ApiClient(None).get(url).json()["liked"] is False
    listing = bob_api.get("/api/v1/models").json()["results"]
    assert [(m["id"], m["like_count"], m["liked"]) for m in listing] == [(published["id"], 1, True)]
    web = Client()
    web.force_login(bob)
    page = web.get(f"/gallery/{published['id']}/").content.decode()
    assert "♥ Liked" in page and '<span id="like-count">1</span>' in page
    unliked = bob_api.delete(f"{url}/like")
    assert unliked.status_code == 200 and unliked.json()["like_count"] == 0 and unliked.json()["liked"] is False
    assert bob_api.delete(f"{url}/like").json()["like_count"] == 0
    assert "♡ Like" in web.get(f"/gallery/{published['id']}/").content.decode()


def test_the_owner_sees_likes_of_others(published, alice_api, bob_api):
    bob_api.post(f"/api/v1/models/{published['id']}/like")
    mine = alice_api.get(f"/api/v1/models/{published['id']}").json()
    assert mine["like_count"] == 1 and mine["liked"] is False


def test_drafts_and_missing_models_cannot_be_liked(alice_api, bob_api, alice, finished_job):
    draft = alice_api.post("/api/v1/models", {"training": finished_job(alice).pk, "published": False}).json()
    for api in (alice_api, bob_api):
        response = api.post(f"/api/v1/models/{draft['id']}/like")
        assert response.status_code == 404 and response["Content-Type"] == "application/problem+json"
    assert bob_api.post("/api/v1/models/999999/like").status_code == 404
    assert alice_api.get(f"/api/v1/models/{draft['id']}").json()["like_count"] == 0


def test_liking_needs_a_token(published, bob):
    assert ApiClient(None).post(f"/api/v1/models/{published['id']}/like").status_code == 401
    session = Client()
    session.force_login(bob)
    assert session.post(f"/api/v1/models/{published['id']}/like").status_code == 401, "writes need a token"
    assert ApiClient("nope").post(f"/api/v1/models/{published['id']}/like").status_code == 401
