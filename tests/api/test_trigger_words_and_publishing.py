"""The trigger word checker over the API, and two publishing fixes: examples sent again are not
duplicated, and an unknown license is answered with the licenses on offer."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile

from gallery.models import Generation, GenerationImage, License
from tests.conftest import make_image_bytes

pytestmark = pytest.mark.django_db


def check(api, **params):
    return api.get("/api/v1/trigger-words/check", data=params)


def test_a_made_up_word_is_ok(alice_api):
    body = check(alice_api, word="ZXQ_MIRA").json()
    assert body["ok"] is True and body["errors"] == [] and body["word"] == "ZXQ_MIRA"
    assert body["base_model"] == "tiny" and body["notes"], "it says how the word was checked"


def test_errors_block_and_warnings_advise(alice_api):
    spaced = check(alice_api, word="two words").json()
    assert spaced["ok"] is False and "letters, digits" in spaced["errors"][0]
    common = check(alice_api, word="dog", base_model="tiny").json()
    assert common["ok"] is True and "common English word" in common["warnings"][0]
    empty = check(alice_api, word="").json()
    assert empty["ok"] is True and "No trigger word yet" in empty["warnings"][0]


def test_bad_queries_are_422(alice_api, bob_api):
    missing = check(alice_api)
    assert missing.status_code == 422 and "word" in missing.json()["errors"]
    assert check(alice_api, word="x" * 201).status_code == 422
    bad_base = check(alice_api, word="zxq", base_model="sdxl")
    assert bad_base.status_code == 422 and "tiny" in bad_base.json()["errors"]["base_model"][0]
    assert check(bob_api, word="zxq").status_code == 200, "any account may check words"


def test_publishing_the_same_examples_twice_adds_them_once(alice_api, alice, finished_job):
    job = finished_job(alice)
    row = {"kind": "training", "id": job.pk, "scale": 1.0, "training_id": job.pk, "label": "zqx"}
    generation = Generation.objects.create(owner=alice, prompt="zqx on a beach", base_model="tiny", seed=3, steps=3,
                                           guidance=1.0, width=64, height=64, state="succeeded", loras=[row], num_images=2)
    for index in range(2):
        image = GenerationImage(generation=generation, index=index, seed=3 + index)
        image.image.save(f"{index}.png", ContentFile(make_image_bytes(64, 64, pattern=index)), save=True)
    examples = [{"prediction": generation.pk, "index": 0}, {"prediction": generation.pk, "index": 1}]
    first = alice_api.post("/api/v1/models", {"training": job.pk, "examples": examples}).json()
    prompts = [e["prompt"] for e in first["examples"]]
    assert prompts.count("zqx on a beach") == 2, "two different images of one prediction are two examples"
    again = alice_api.post("/api/v1/models", {"training": job.pk, "examples": examples + examples[:1]})
    assert again.status_code == 200, "it changed the model that was there"
    assert [e["id"] for e in again.json()["examples"]] == [e["id"] for e in first["examples"]], "nothing duplicated"


def test_an_unknown_license_lists_the_offered_ones(alice_api, alice, finished_job):
    response = alice_api.post("/api/v1/models", {"training": finished_job(alice).pk, "license": "proprietary"})
    assert response.status_code == 422
    message = response.json()["errors"]["license"][0]
    assert all(value in message for value in License.values), message
    assert "mit" in response.json()["detail"] and "apache-2.0" in response.json()["detail"]
    document = alice_api.get("/api/v1/openapi.json").json()
    license_schema = document["components"]["schemas"]["ModelPublish"]["properties"]["license"]
    assert license_schema["enum"] == list(License.values)
