"""The publishing page's example management over the API: add training samples (and generated
images), choose the cover, remove an example; only the owner, and only with good ids."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.test import Client

from tests.api.conftest import ApiClient
from tests.conftest import make_image_bytes
from trainer.models import TrainingSample

pytestmark = pytest.mark.django_db


def add_sample(job, step: int, prompt: str) -> TrainingSample:
    sample = TrainingSample(job=job, step=step, prompt=prompt)
    sample.image.save("s.png", ContentFile(make_image_bytes(64, 64, color=(step * 20 % 256, 10, 10))), save=True)
    return sample


@pytest.fixture
def model_and_job(alice_api, alice, finished_job):
    job = finished_job(alice)
    body = alice_api.post("/api/v1/models", {"training": job.pk, "title": "Zqx"}).json()
    assert len(body["examples"]) == 1 and body["examples"][0]["is_cover"]
    return body, job


def sources(model: dict) -> list[tuple[str, bool]]:
    return [(e["settings"].get("source"), e["is_cover"]) for e in model["examples"]]


def test_add_training_samples_as_examples(alice_api, alice, model_and_job):
    model, job = model_and_job
    extra = add_sample(job, 2, "zqx in the snow")
    listed = [s["id"] for s in alice_api.get(f"/api/v1/trainings/{job.pk}").json()["samples"]]
    assert extra.pk in listed, "the training object names its samples' ids"
    url = f"/api/v1/models/{model['id']}/examples"
    added = alice_api.post(url, {"samples": listed})
    assert added.status_code == 201, added.content
    assert sources(added.json()) == [("training sample, step 4", True), ("training sample, step 2", False)]
    assert [e["prompt"] for e in added.json()["examples"]][1] == "zqx in the snow"
    again = alice_api.post(url, {"samples": [extra.pk, extra.pk]}).json()
    assert len(again["examples"]) == 2, "a sample already among the examples is not added twice"
    assert ApiClient(None).get(added.json()["examples"][1]["url"]).status_code == 200
    web = Client()
    web.force_login(alice)
    assert web.get(f"/gallery/publish/{job.pk}/").content.decode().count("zqx in the snow") >= 1


def test_choose_the_cover_and_remove_examples(alice_api, model_and_job):
    model, job = model_and_job
    model = alice_api.post(f"/api/v1/models/{model['id']}/examples", {"samples": [add_sample(job, 2, "b").pk]}).json()
    first, second = (e["id"] for e in model["examples"])
    covered = alice_api.patch(f"/api/v1/models/{model['id']}/examples/{second}", {"is_cover": True})
    assert covered.status_code == 200, covered.content
    assert [(e["id"], e["is_cover"]) for e in covered.json()["examples"]] == [(second, True), (first, False)], "cover first"
    removed = alice_api.delete(f"/api/v1/models/{model['id']}/examples/{second}")
    assert removed.status_code == 204
    after = alice_api.get(f"/api/v1/models/{model['id']}").json()
    assert [(e["id"], e["is_cover"]) for e in after["examples"]] == [(first, True)], "the next example became the cover"
    assert ApiClient(None).get(f"/api/v1/models/{model['id']}/examples/{second}").status_code == 404
    assert alice_api.delete(f"/api/v1/models/{model['id']}/examples/{second}").status_code == 404


def test_only_the_owner_manages_examples(alice_api, bob_api, alice, model_and_job, finished_job):
    model, job = model_and_job
    example = model["examples"][0]["id"]
    assert bob_api.get(f"/api/v1/models/{model['id']}").status_code == 200, "published: bob may look"
    for response in (bob_api.post(f"/api/v1/models/{model['id']}/examples", {"samples": [job.samples.first().pk]}),
                     bob_api.patch(f"/api/v1/models/{model['id']}/examples/{example}", {"is_cover": True}),
                     bob_api.delete(f"/api/v1/models/{model['id']}/examples/{example}"),
                     alice_api.delete(f"/api/v1/models/999999/examples/{example}")):
        assert response.status_code == 404 and response["Content-Type"] == "application/problem+json"
    draft = alice_api.post("/api/v1/models", {"training": finished_job(alice, trigger="dra").pk, "published": False}).json()
    assert bob_api.delete(f"/api/v1/models/{draft['id']}/examples/{draft['examples'][0]['id']}").status_code == 404
    assert ApiClient(None).delete(f"/api/v1/models/{model['id']}/examples/{example}").status_code == 401
    assert len(alice_api.get(f"/api/v1/models/{model['id']}").json()["examples"]) == 1
    assert len(alice_api.get(f"/api/v1/models/{draft['id']}").json()["examples"]) == 1


def test_a_refused_add_keeps_no_copies_of_the_samples_it_had_added(alice_api, model_and_job, settings):
    model, job = model_and_job
    extra = add_sample(job, 2, "zqx in the snow")
    stored = lambda: sorted(p for p in (settings.MEDIA_ROOT / "users").rglob("*") if p.is_file())  # noqa: E731
    before = stored()
    url = f"/api/v1/models/{model['id']}/examples"
    # The sample is copied first; the missing prediction then refuses the whole request.
    refused = alice_api.post(url, {"samples": [extra.pk], "images": [{"prediction": 999999, "index": 0}]})
    assert refused.status_code == 422 and "images[0]" in refused.json()["errors"]
    assert len(alice_api.get(f"/api/v1/models/{model['id']}").json()["examples"]) == 1
    assert stored() == before, "the copied sample's image and thumbnail are deleted with the refused request"
    assert len(alice_api.post(url, {"samples": [extra.pk]}).json()["examples"]) == 2
    assert len(stored()) == len(before) + 2


def test_bad_input_is_a_422(alice_api, bob, model_and_job, finished_job):
    model, job = model_and_job
    bobs_sample = finished_job(bob, trigger="bbb").samples.first()
    url = f"/api/v1/models/{model['id']}/examples"
    for body, field in (({"samples": [bobs_sample.pk]}, "samples"), ({"samples": []}, "samples"),
                        ({"samples": "all"}, "samples"), ({"samples": ["x"]}, "samples[0]"),
                        ({"images": [{"prediction": 999999}]}, "images[0]"), ({"colour": 1}, "body.colour"),
                        ({"images": [{"prediction": 1, "index": True}]}, "images[0].index"),
                        ({"images": [{"prediction": 1, "index": -1}]}, "images[0].index")):
        response = alice_api.post(url, body)
        assert response.status_code == 422 and field in response.json()["errors"], (body, response.content)
    assert alice_api.post(url, {}).status_code == 422
    example = model["examples"][0]["id"]
    for body in ({"is_cover": False}, {}, {"is_cover": "yes"}, {"position": 2}):
        assert alice_api.patch(f"{url}/{example}", body).status_code == 422, body
    assert len(alice_api.get(f"/api/v1/models/{model['id']}").json()["examples"]) == 1
