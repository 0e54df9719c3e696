"""Every API failure is a problem document: oversized, malformed and unexpected requests included."""

from __future__ import annotations

import logging

import pytest
from django.test import Client
from django.urls import reverse

from flux_studio.api import views_models
from gallery import services_gallery
from tests.api.conftest import ApiClient
from tests.conftest import make_image_bytes

pytestmark = pytest.mark.django_db


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/problem+json", response["Content-Type"]
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_a_json_body_over_the_upload_limit_is_a_413(alice_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = assert_problem(alice_api.post("/api/v1/trainings", {"input": {"name": "x" * 5000}}), 413)
    assert "too large" in body["detail"]


def test_too_many_form_fields_is_a_400(alice_api, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    fields = {f"field{i}": "x" for i in range(20)}
    body = assert_problem(alice_api.post("/api/v1/files", fields, multipart=True), 400)
    assert "fields" in body["detail"].lower()


def test_a_broken_multipart_body_is_a_400(alice_token):
    response = Client().generic("POST", "/api/v1/files", b"--x\r\nnot a part", content_type="multipart/form-data",
                                headers={"Authorization": f"Bearer {alice_token}"})
    body = assert_problem(response, 400)
    assert "multipart" in body["detail"]


def test_deeply_nested_json_is_a_400_and_nul_text_a_422(alice_api):
    nested = alice_api.client.post("/api/v1/predictions", "[" * 100_000 + "]" * 100_000, content_type="application/json",
                                   headers=alice_api.headers)
    assert_problem(nested, 400)
    nul = assert_problem(alice_api.post("/api/v1/predictions", {"input": {"prompt": "a\u0000cat"}}), 422)
    assert "NUL" in nul["detail"]


def test_an_unexpected_error_is_a_500_problem_and_is_logged(monkeypatch, caplog):
    def broken(**kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(views_models.selectors, "browse_models", broken)
    with caplog.at_level(logging.ERROR, logger="flux_studio.api.auth"):
        body = assert_problem(ApiClient(None).get("/api/v1/models"), 500)
    assert "secret internal detail" not in body["detail"], "internals are logged, not shown"
    assert any("secret internal detail" in r.exc_text or "" for r in caplog.records if r.exc_text), caplog.text


@pytest.mark.services
def test_a_nul_in_search_text_is_no_server_error(alice, make_job_published):
    """PostgreSQL refuses NUL in a text parameter: the search strips it (runs on both shapes)."""
    model = make_job_published(alice)
    anonymous = Client()
    for path in ("/api/v1/models?q=zq%00x", "/api/v1/models?tag=a%00b&base_model=ti%00ny"):
        assert anonymous.get(path).status_code == 200, path
    listing = anonymous.get("/api/v1/models?q=zq%00x").json()["results"]
    assert [m["id"] for m in listing] == [model.pk], "the NUL is dropped, the rest still searched"
    page = anonymous.get(reverse("gallery:browse") + "?q=zq%00x&tag=%00&base=%00")
    assert page.status_code == 200 and model.title in page.content.decode()


def test_nul_in_publish_details_is_a_clear_error(alice, make_job_published):
    model = make_job_published(alice)
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:  # refused by the service, not by the database
        services_gallery.gallery_model_update(model=model, title="a\x00b", description="", trigger_word="zqx",
                                              license="mit", tags="")
    assert "NUL" in " ".join(caught.value.message_dict["title"])


@pytest.fixture
def make_job_published(finished_job):
    def make(owner):
        job = finished_job(owner, trigger="zqx")
        model = services_gallery.draft_for_training(owner=owner, job=job)
        model.title = "Zqx cats"
        model.save()
        return services_gallery.gallery_model_publish(model=model)

    return make


def test_uploads_still_work_after_the_error_handling(alice_api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    photo = SimpleUploadedFile("p.png", make_image_bytes(300, 300))
    assert alice_api.post("/api/v1/files", {"file": [photo]}, multipart=True).status_code == 201


@pytest.mark.parametrize("value", [["fast"], {"a": 1}])
def test_a_list_or_object_where_a_name_belongs_is_a_422_naming_it(alice_api, alice, make_dataset, no_queue, value):
    dataset = make_dataset(alice, n=1)
    for field in ("preset", "memory_mode", "base_model"):
        body = assert_problem(alice_api.post("/api/v1/trainings", {"input": {"dataset": dataset.pk, "trigger_word": "zxq",
                                                                             field: value}}), 422)
        assert list(body["errors"]) == [f"input.{field}"], body
    body = assert_problem(alice_api.post("/api/v1/predictions", {"input": {"prompt": "a cat", "base_model": value}}), 422)
    assert list(body["errors"]) == ["input.base_model"], body
    training = alice_api.post("/api/v1/trainings", {"input": {"dataset": dataset.pk, "trigger_word": "zxq"}}).json()
    alice_api.post(f"/api/v1/trainings/{training['id']}/cancel")
    body = assert_problem(alice_api.post(f"/api/v1/trainings/{training['id']}/resume", {"memory_mode": value}), 422)
    assert list(body["errors"]) == ["memory_mode"], body
