"""/datasets: list, create, read with photos, rename/restyle, duplicate, export, delete; owner-only."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.api.conftest import ApiClient, all_pages, body_of
from tests.conftest import make_image_bytes
from trainer.models import Dataset, Photo

pytestmark = pytest.mark.django_db


def test_create_then_upload_a_zip_into_it_and_read_its_photos(alice_api, alice):
    created = alice_api.post("/api/v1/datasets", {"name": "  Mira  ", "trigger_word": "ZXQ_MIRA"})
    assert created.status_code == 201, created.content
    dataset = created.json()
    assert dataset["name"] == "Mira" and dataset["trigger_word"] == "ZXQ_MIRA" and dataset["photos"] == []
    assert dataset["counts"] == {"photos": 0, "training": 0, "captioned": 0}
    assert dataset["captioning"]["status"] is None and "No photos yet" in dataset["health"]["problems"][0]
    assert dataset["urls"]["get"].endswith(f"/api/v1/datasets/{dataset['id']}")
    assert dataset["urls"]["web"].endswith(f"/datasets/{dataset['id']}/")

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.png", make_image_bytes(300, 300, pattern=1))
        z.writestr("a.txt", "ZXQ_MIRA on grass")
        z.writestr("b.png", make_image_bytes(300, 300, pattern=2))
    upload = alice_api.post("/api/v1/files", {"file": [SimpleUploadedFile("set.zip", archive.getvalue())],
                                              "dataset": str(dataset["id"])}, multipart=True)
    assert upload.status_code == 201 and upload.json()["dataset"] == dataset["id"]

    body = alice_api.get(dataset["urls"]["get"]).json()
    assert [(p["name"], p["caption"], p["excluded"]) for p in body["photos"]] == [
        ("a.png", "ZXQ_MIRA on grass", False), ("b.png", "", False)]
    assert body["counts"] == {"photos": 2, "training": 2, "captioned": 1}
    assert body_of(alice_api.get(body["photos"][0]["urls"]["download"]))[:4] == b"\x89PNG"
    assert body["health"]["missing_caption"] == 1
    listed = alice_api.get(body["urls"]["files"]).json()["results"]
    assert sorted(f["id"] for f in listed) == sorted(p["id"] for p in body["photos"])


def test_list_is_paginated_and_only_yours(alice_api, bob_api, alice, bob, make_dataset):
    ids = [make_dataset(alice, n=1, name=f"set {i}").pk for i in range(3)]
    make_dataset(bob, n=1, name="bob's")
    assert all_pages(alice_api, "/api/v1/datasets", 2) == sorted(ids, reverse=True)
    first = alice_api.get("/api/v1/datasets").json()["results"][0]
    assert first["counts"] == {"photos": 1, "training": 1, "captioned": 1} and "photos" not in first
    assert [d["name"] for d in bob_api.get("/api/v1/datasets").json()["results"]] == ["bob's"]


def test_rename_and_change_the_trigger_word_and_caption_style(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    url = f"/api/v1/datasets/{dataset.pk}"
    body = alice_api.patch(url, {"name": "Cats", "trigger_word": "QWZ", "caption_placement": "suffix",
                                 "caption_suffix": "film grain"})
    assert body.status_code == 200, body.content
    assert (body.json()["name"], body.json()["trigger_word"], body.json()["caption_placement"]) == ("Cats", "QWZ", "suffix")
    dataset.refresh_from_db()
    assert (dataset.name, dataset.trigger_word, dataset.caption_suffix) == ("Cats", "QWZ", "film grain")
    assert alice_api.patch(url, {"trigger_word": ""}).json()["trigger_word"] == "", "an empty trigger clears it"
    assert alice_api.patch(url, {"name": "Cats 2"}).json()["caption_placement"] == "suffix", "fields left out stay"


@pytest.mark.parametrize("body, field", [
    ({"trigger_word": "two words"}, "trigger_word"),
    ({"trigger_word": 7}, "trigger_word"),
    ({"name": ""}, "name"),
    ({"name": "x" * 121}, "name"),
    ({"caption_placement": "middle"}, "caption_placement"),
    ({"caption_prefix": "p" * 201}, "caption_prefix"),
    ({"colour": "red"}, "body.colour"),
    ({"captioner": "/etc"}, "captioner"),
    ({"captioner": "florence2:/home/someone/models"}, "captioner"),
    ({"captioner": "some-user/any-hub-model"}, "captioner"),
])
def test_bad_edits_are_422_and_change_nothing(alice_api, alice, make_dataset, body, field):
    dataset = make_dataset(alice, n=1, trigger="zxq")
    response = alice_api.patch(f"/api/v1/datasets/{dataset.pk}", {"name": "Renamed", **body} if field != "name" else body)
    assert response.status_code == 422 and response["Content-Type"] == "application/problem+json"
    assert field in response.json()["errors"], response.json()
    dataset.refresh_from_db()
    assert (dataset.name, dataset.trigger_word, dataset.caption_placement) == ("pets", "zxq", "prefix")


def test_a_dataset_may_use_the_offered_captioners_only(alice_api, alice, make_dataset, settings):
    settings.CAPTIONERS = ["blip:/opt/models/blip-large"]
    dataset = make_dataset(alice, n=1)
    url = f"/api/v1/datasets/{dataset.pk}"
    for spec in ("blip", "smolvlm", settings.CAPTIONER, "blip:/opt/models/blip-large", ""):
        response = alice_api.patch(url, {"captioner": spec})
        assert response.status_code == 200 and response.json()["captioner"] == spec, response.content
    refused = alice_api.patch(url, {"captioner": "/etc"}).json()
    assert "not a captioner offered here" in refused["errors"]["captioner"][0]
    assert "blip:/opt/models/blip-large" in refused["errors"]["captioner"][0], "says what may be chosen"
    # one chosen before the check (or since dropped from CAPTIONERS) does not block the rest
    Dataset.objects.filter(pk=dataset.pk).update(captioner="florence2:/models/old")
    kept = alice_api.patch(url, {"trigger_word": "QWZ"})
    assert kept.status_code == 200 and kept.json()["captioner"] == "florence2:/models/old", kept.content


def test_bad_creates_store_nothing(alice_api, alice):
    assert alice_api.post("/api/v1/datasets", {}).json()["errors"] == {"name": ["give the dataset a name"]}
    refused = alice_api.post("/api/v1/datasets", {"name": "Mira", "trigger_word": "no spaces please"})
    assert refused.status_code == 422 and "trigger_word" in refused.json()["errors"]
    assert alice_api.post("/api/v1/datasets", {"name": "Mira"}).status_code == 201
    assert list(Dataset.objects.filter(owner=alice).values_list("name", flat=True)) == ["Mira"]


def test_empty_patch_says_what_can_change(alice_api, alice, make_dataset):
    response = alice_api.patch(f"/api/v1/datasets/{make_dataset(alice, n=1).pk}", {})
    assert response.status_code == 422 and "trigger_word" in response.json()["detail"]


def test_duplicate_and_export(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    Photo.objects.filter(pk=dataset.photos.first().pk).update(excluded=True)
    copy = alice_api.post(f"/api/v1/datasets/{dataset.pk}/duplicate", {"name": "pets, take 2"})
    assert copy.status_code == 201
    assert copy.json()["name"] == "pets, take 2" and copy.json()["counts"] == {"photos": 2, "training": 1, "captioned": 1}
    assert alice_api.post(f"/api/v1/datasets/{dataset.pk}/duplicate").json()["name"] == "pets (copy)"
    export = alice_api.get(f"/api/v1/datasets/{dataset.pk}/export")
    assert export.status_code == 200 and export["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(body_of(export))).namelist()
    assert names == ["pet1.jpg", "pet1.txt"], "excluded photos are not exported"


def test_delete_removes_the_dataset_and_its_photos(alice_api, alice, make_dataset, django_capture_on_commit_callbacks):
    dataset = make_dataset(alice, n=2)
    names = [p.image.name for p in dataset.photos.all()]
    storage = dataset.photos.first().image.storage
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.delete(f"/api/v1/datasets/{dataset.pk}").status_code == 204
    assert not Dataset.objects.filter(pk=dataset.pk).exists() and not Photo.objects.filter(dataset_id=dataset.pk).exists()
    assert not any(storage.exists(name) for name in names)
    assert alice_api.get(f"/api/v1/datasets/{dataset.pk}").status_code == 404


def test_someone_elses_dataset_is_404_for_every_operation(bob_api, alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    base = f"/api/v1/datasets/{dataset.pk}"
    for response in (
        bob_api.get(base), bob_api.patch(base, {"name": "mine now"}), bob_api.delete(base),
        bob_api.post(f"{base}/duplicate"), bob_api.get(f"{base}/export"),
        bob_api.post(f"{base}/captions/bulk", {"op": "append", "text": "x"}),
        bob_api.get(f"{base}/captioning"), bob_api.post(f"{base}/captioning"),
    ):
        assert response.status_code == 404, response.content
        assert response.json()["detail"] == "no such object (or it is not yours)"
    dataset.refresh_from_db()
    assert dataset.name == "pets" and dataset.photos.count() == 1
    assert not Dataset.objects.exclude(pk=dataset.pk).exists(), "bob got no copy"


def test_anonymous_is_401_and_browser_sessions_only_read(alice_client, alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    anonymous = ApiClient(None)
    for response in (anonymous.get("/api/v1/datasets"), anonymous.post("/api/v1/datasets", {"name": "x"}),
                     anonymous.get(f"/api/v1/datasets/{dataset.pk}"), anonymous.delete(f"/api/v1/datasets/{dataset.pk}"),
                     anonymous.get(f"/api/v1/datasets/{dataset.pk}/export"), anonymous.get("/api/v1/trigger-words/check?word=zxq")):
        assert response.status_code == 401 and response["WWW-Authenticate"] == "Bearer"
    assert alice_client.get(f"/api/v1/datasets/{dataset.pk}").status_code == 200
    assert alice_client.delete(f"/api/v1/datasets/{dataset.pk}").status_code == 401, "writes need a token"
    assert Dataset.objects.filter(pk=dataset.pk).exists()


def test_unsupported_methods_and_bodies(alice_api, alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    assert alice_api.post(f"/api/v1/datasets/{dataset.pk}", {"name": "x"}).status_code == 405
    response = alice_api.client.patch(f"/api/v1/datasets/{dataset.pk}", "name=x", content_type="text/plain",
                                      headers=alice_api.headers)
    assert response.status_code == 415
    bad = alice_api.client.patch(f"/api/v1/datasets/{dataset.pk}", "{", content_type="application/json",
                                 headers=alice_api.headers)
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["detail"]
