"""POST /models/{id}/hub: push your published model to the Hugging Face Hub (a stand-in here),
as the model page's form does; the model's `hub` shows how it went."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from gallery.models import HubState
from tests.api.conftest import ApiClient
from tests.gallery.test_hub import TOKEN, immediate_light_queue, make_published, stand_in  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(alice):
    return make_published(alice)


def push(api, model, **body):
    return api.post(f"/api/v1/models/{model.pk}/hub", {"repo_id": "alice-hf/zqx-cat", "token": TOKEN, **body})


def test_push_then_the_model_shows_the_repo(alice_api, bob_api, alice, published, stand_in, immediate_light_queue,
                                            django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = push(alice_api, published, private=True)
    assert response.status_code == 202, response.content
    assert response.json()["hub"]["status"] == "pushing" and response["Location"].endswith(f"/api/v1/models/{published.pk}")
    assert len(callbacks) == 1 and "README.md" in stand_in.repos["alice-hf/zqx-cat"]
    mine = alice_api.get(f"/api/v1/models/{published.pk}").json()["hub"]
    assert mine["status"] == "pushed" and mine["repo"] == "alice-hf/zqx-cat" and mine["pushed_at"]
    assert mine["url"] == f"{stand_in.url}/alice-hf/zqx-cat" and mine["error"] is None
    theirs = bob_api.get(f"/api/v1/models/{published.pk}").json()["hub"]
    assert theirs == {**mine, "status": None}, "others see the repo, not the owner's push status"
    assert TOKEN not in json.dumps(mine) and TOKEN not in response.content.decode()
    page = Client().get(published.get_absolute_url()).content.decode()
    assert 'id="hub-link"' in page and mine["url"] in page, "the model page shows the same repo"


def test_a_refused_token_shows_as_the_owners_error(alice_api, published, stand_in, immediate_light_queue,
                                                   django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert push(alice_api, published, token="hf_wrong_456").status_code == 202
    hub = alice_api.get(f"/api/v1/models/{published.pk}").json()["hub"]
    assert hub["status"] == "failed" and "401" in hub["error"] and "hf_wrong_456" not in hub["error"] and hub["url"] is None


def test_who_may_push_and_bad_input(alice_api, bob_api, alice, published, finished_job, stand_in,
                                    django_capture_on_commit_callbacks):
    assert push(bob_api, published).status_code == 404, "someone else's model answers as a missing one"
    assert push(alice_api, type("Missing", (), {"pk": 999999})).status_code == 404
    assert ApiClient(None).post(f"/api/v1/models/{published.pk}/hub", {"repo_id": "a/b", "token": TOKEN}).status_code == 401
    for body, field in (({"token": ""}, "token"), ({"repo_id": "bad name!"}, "repo_id"), ({"repo_id": 5}, "repo_id"),
                        ({"private": "yes"}, "private"), ({"token": "x" * 401}, "token"), ({"org": "x"}, "body.org")):
        response = push(alice_api, published, **body)
        assert response.status_code == 422 and field in response.json()["errors"], (body, response.content)
    draft = alice_api.post("/api/v1/models", {"training": finished_job(alice).pk, "published": False}).json()
    response = alice_api.post(f"/api/v1/models/{draft['id']}/hub", {"repo_id": "alice-hf/x", "token": TOKEN})
    assert response.status_code == 422 and "publish" in response.json()["errors"]["model"][0]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert push(alice_api, published).status_code == 202
        again = push(alice_api, published)
    assert again.status_code == 409 and "already under way" in again.json()["detail"] and len(callbacks) == 1
    published.refresh_from_db()
    assert published.hub_state == HubState.PUSHING and not stand_in.calls
