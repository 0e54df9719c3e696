"""POST /trainings with the images themselves: an uploaded zip's URL (`input_images`, like
Replicate's), a zip sent as a file part of a multipart request, or one file id."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import make_image_bytes
from trainer.models import Dataset, TrainingJob

pytestmark = pytest.mark.django_db


def pet_zip(n: int = 3, extra: dict[str, bytes] | None = None) -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(n):
            z.writestr(f"pet{i}.png", make_image_bytes(300, 300, color=(50 * i, 90, 30), pattern=i))
            z.writestr(f"pet{i}.txt", f"a photo of zxq, view {i}")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return archive.getvalue()


def upload_zip(api, data: bytes) -> dict:
    response = api.post("/api/v1/files", {"file": [SimpleUploadedFile("pets.zip", data)]}, multipart=True)
    assert response.status_code == 201, response.content
    return response.json()


def create(api, **input_):
    return api.post("/api/v1/trainings", {"input": input_})


def trained_captions(body: dict) -> list[str]:
    return sorted(row["caption"] for row in TrainingJob.objects.get(pk=body["id"]).snapshot)


def test_input_images_is_the_url_of_an_uploaded_zip(alice_api, no_queue):
    uploaded = upload_zip(alice_api, pet_zip(3))
    assert uploaded["urls"]["get"].endswith(f"/api/v1/files/uploads/{uploaded['id']}")
    assert alice_api.get(uploaded["urls"]["get"]).json()["files"] == uploaded["files"]
    response = create(alice_api, input_images=uploaded["urls"]["get"], trigger_word="zxq")
    assert response.status_code == 201, response.content
    body = response.json()
    assert no_queue == [body["id"]]
    assert trained_captions(body) == [f"a photo of zxq, view {i}" for i in range(3)], "the zip's captions are kept"
    assert body["input"]["dataset"] != uploaded["dataset"], "a copy: later edits of the upload do not change it"
    # The path alone and one file's URL work too.
    path_only = "/api/v1/files/uploads/%d" % uploaded["id"]
    assert create(alice_api, input_images=path_only, trigger_word="zxq").status_code == 201
    one = create(alice_api, input_images=uploaded["files"][0]["urls"]["download"], trigger_word="zxq").json()
    assert len(trained_captions(one)) == 1


@pytest.mark.parametrize("url, message", [
    ("https://example.com/pets.zip", "does not download from other sites"),
    ("http://testserver/api/v1/trainings/1", "not an upload or file URL"),
    ("http://testserver/api/v1/files/uploads/999999", "no such upload"),
    (42, "a URL"),
])
def test_input_images_refuses_other_urls(alice_api, no_queue, url, message):
    response = create(alice_api, input_images=url, trigger_word="zxq")
    assert response.status_code == 422, response.content
    assert message in response.json()["errors"]["input.input_images"][0]
    assert no_queue == []


def test_someone_elses_upload_url_is_refused(alice_api, bob_api, no_queue):
    uploaded = upload_zip(alice_api, pet_zip(2))
    assert bob_api.get(uploaded["urls"]["get"]).status_code == 404
    response = create(bob_api, input_images=uploaded["urls"]["get"], trigger_word="zxq")
    assert response.status_code == 422 and "not yours" in response.json()["detail"]
    assert no_queue == []


def test_one_file_id_without_a_list(alice_api, no_queue):
    uploaded = upload_zip(alice_api, pet_zip(2))
    body = create(alice_api, files=uploaded["files"][1]["id"], trigger_word="zxq").json()
    assert trained_captions(body) == ["a photo of zxq, view 1"]
    assert TrainingJob.objects.get(pk=body["id"]).dataset.name == "API training (1 photo)"


def test_only_one_source_at_a_time(alice_api, no_queue):
    uploaded = upload_zip(alice_api, pet_zip(1))
    response = create(alice_api, input_images=uploaded["urls"]["get"], dataset=uploaded["dataset"], trigger_word="zxq")
    assert response.status_code == 422 and "not dataset and input_images" in response.json()["detail"]


def multipart(api, data: bytes | None, input_: dict | str, **fields):
    form = {"input": input_ if isinstance(input_, str) else json.dumps(input_), **fields}
    if data is not None:
        form["input_images"] = SimpleUploadedFile("pets.zip", data, content_type="application/zip")
    return api.post("/api/v1/trainings", form, multipart=True)


def test_multipart_with_a_zip_part_and_json_input(alice_api, alice, no_queue):
    data = pet_zip(3, extra={"tiny.png": make_image_bytes(40, 40)})
    response = multipart(alice_api, data, {"trigger_word": "zxq", "preset": "fast", "steps": 12},
                         webhook="https://hooks.example.com/t", webhook_events_filter="start,completed")
    assert response.status_code == 201, response.content
    body = response.json()
    assert no_queue == [body["id"]] and body["input"]["steps"] == 12
    assert trained_captions(body) == [f"a photo of zxq, view {i}" for i in range(3)]
    assert [r["name"] for r in body["rejected_files"]] == ["pets.zip › tiny.png"]
    assert Dataset.objects.get(pk=body["input"]["dataset"], owner=alice).photos.count() == 3
    from flux_studio.api.models import Webhook

    assert Webhook.objects.get(object_id=body["id"]).events == ["start", "completed"]


@pytest.mark.parametrize("data, input_, fields, status, where", [
    (None, {"trigger_word": "zxq"}, {}, 422, "input_images"),
    (b"not a zip, not an image", {"trigger_word": "zxq"}, {}, 422, "input.input_images"),
    ("zip", "{not json", {}, 400, None),
    ("zip", {"trigger_word": "zxq", "dataset": 1}, {}, 422, "input.dataset"),
    ("zip", {"trigger_word": "zxq"}, {"colour": "red"}, 422, "form.colour"),
])
def test_multipart_mistakes_are_clear_and_queue_nothing(alice_api, no_queue, data, input_, fields, status, where):
    before = Dataset.objects.count()
    response = multipart(alice_api, pet_zip(1) if data == "zip" else data, input_, **fields)
    assert response.status_code == status, response.content
    if where:
        assert where in response.json()["errors"], response.json()
    assert no_queue == [] and Dataset.objects.count() == before
