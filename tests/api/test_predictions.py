"""/predictions: create through the generation service, validation, Prefer: wait, owner-only images."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from flux_studio.api import views_predictions
from gallery import services
from gallery.models import Generation, GenerationImage, GenerationState
from tests.api.conftest import all_pages, body_of
from tests.conftest import make_image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_gpu(monkeypatch) -> list[int]:
    queued: list[int] = []
    monkeypatch.setattr(services, "generation_enqueue", lambda g: queued.append(g.pk))
    return queued


def create(api, headers=None, **input_):
    return api.post("/api/v1/predictions", {"input": input_}, headers=headers or {})


def test_create_with_a_lora_and_defaults(alice_api, alice, finished_job, no_gpu):
    job = finished_job(alice)
    response = create(alice_api, prompt="a photo of zqx", loras=[{"training": job.pk, "scale": 0.8}], seed=5, num_outputs=2)
    assert response.status_code == 201, response.content
    body = response.json()
    generation = Generation.objects.get(pk=body["id"])
    assert no_gpu == [generation.pk] and body["status"] == "starting" and body["output"] is None
    assert generation.loras[0]["training_id"] == job.pk and generation.loras[0]["scale"] == 0.8
    assert body["input"]["num_outputs"] == 2 and body["input"]["seed"] == 5 and body["input"]["width"] % 16 == 0
    assert body["urls"]["cancel"].endswith(f"/predictions/{generation.pk}/cancel")
    assert body["input"]["loras"] == [{"training": job.pk, "scale": 0.8}]
    again = alice_api.post("/api/v1/predictions", {"input": body["input"]})
    assert again.status_code == 201, ("the input posted back as it came", again.content)
    assert again.json()["input"] == body["input"]


@pytest.mark.parametrize("input_, field", [
    ({"prompt": ""}, "input.prompt"),
    ({"prompt": "x", "steps": 0}, "input.steps"),
    ({"prompt": "x", "width": 100}, "input.width"),
    ({"prompt": "x", "num_outputs": 9}, "input.num_outputs"),
    ({"prompt": "x", "loras": [{"training": 999999}]}, "input.loras"),
    ({"prompt": "x", "loras": [{"training": 1, "model": 2}]}, "input.loras[0]"),
    ({"prompt": "x", "loras": "all"}, "input.loras"),
    ({"prompt": "x", "colour": "red"}, "input.colour"),
])
def test_bad_input_is_422(alice_api, no_gpu, input_, field):
    response = create(alice_api, **input_)
    assert response.status_code == 422, response.content
    assert field in response.json()["errors"], response.json()
    assert no_gpu == []


def test_bobs_lora_cannot_be_used_by_alice(alice_api, bob, finished_job, no_gpu):
    job = finished_job(bob)
    response = create(alice_api, prompt="x", loras=[{"training": job.pk}])
    assert response.status_code == 422 and "not yours" in response.json()["detail"]


def test_prefer_wait_holds_until_the_prediction_finishes(alice_api, no_gpu, monkeypatch):
    """The worker "finishes" during the third poll (same thread: SQLite's test transaction)."""
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            Generation.objects.filter(pk=no_gpu[0]).update(
                state=GenerationState.SUCCEEDED, started_at=timezone.now(), finished_at=timezone.now())

    monkeypatch.setattr(views_predictions.time, "sleep", fake_sleep)
    response = create(alice_api, headers={"Prefer": "wait=5"}, prompt="a cat")
    assert response.json()["status"] == "succeeded" and len(sleeps) == 3
    assert response["Preference-Applied"] == "wait=5"
    no_wait = create(alice_api, prompt="a dog")
    assert no_wait.json()["status"] == "starting" and len(sleeps) == 3 and "Preference-Applied" not in no_wait


def test_prefer_header_parsing():
    class R:
        def __init__(self, value):
            self.headers = {"Prefer": value} if value is not None else {}

    assert views_predictions.prefer_wait(R(None)) == 0
    assert views_predictions.prefer_wait(R("wait=5")) == 5
    assert views_predictions.prefer_wait(R("wait=600")) == 60
    assert views_predictions.prefer_wait(R("respond-async, wait=3")) == 3
    assert views_predictions.prefer_wait(R("wait")) == 60


def test_images_cancel_and_ownership(alice_api, bob_api, alice, no_gpu):
    generation = Generation.objects.get(pk=create(alice_api, prompt="a cat").json()["id"])
    image = GenerationImage(generation=generation, index=0, seed=generation.seed)
    image.image.save("0.png", ContentFile(make_image_bytes(64, 64)), save=True)
    body = alice_api.get(f"/api/v1/predictions/{generation.pk}").json()
    assert body["output"] and body["metrics"]["seeds"] == [generation.seed]
    assert body_of(alice_api.get(body["output"][0]))[:4] == b"\x89PNG"
    for path in (f"/api/v1/predictions/{generation.pk}", body["output"][0]):
        assert bob_api.get(path).status_code == 404
    assert bob_api.post(f"/api/v1/predictions/{generation.pk}/cancel").status_code == 404
    assert bob_api.get("/api/v1/predictions").json()["results"] == []
    canceled = alice_api.post(f"/api/v1/predictions/{generation.pk}/cancel").json()
    assert canceled["status"] == "canceled"
    assert [p["id"] for p in alice_api.get("/api/v1/predictions").json()["results"]] == [generation.pk]


def test_web_url_is_the_predictions_own_page(alice_api, alice, no_gpu):
    from django.test import Client

    body = create(alice_api, prompt="a cat in a hat").json()
    assert body["urls"]["web"].endswith(f"/generate/{body['id']}/")
    browser = Client()
    browser.force_login(alice)
    page = browser.get(body["urls"]["web"].replace("http://testserver", ""))
    assert page.status_code == 200 and "a cat in a hat" in page.content.decode()


def test_list_pages_through_every_prediction(alice_api, no_gpu):
    ids = [create(alice_api, prompt=f"cat {i}").json()["id"] for i in range(5)]
    assert all_pages(alice_api, "/api/v1/predictions", 2) == list(reversed(ids))
