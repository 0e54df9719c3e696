"""POST /trainings that sends photos: a refused launch stores nothing and leaves nothing behind,
and the photos are stored outside any transaction (SQLite's one write lock stays free for the
progress writes of a training that is running meanwhile)."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from tests.api.test_training_images import pet_zip, upload_zip
from trainer import jobs, photos
from trainer.models import Dataset, Photo, TrainingJob


@pytest.fixture
def stored(monkeypatch) -> list[str]:
    """Names of the files written to storage from now on."""
    names: list[str] = []
    save = default_storage.save
    monkeypatch.setattr(default_storage, "save", lambda name, content, **kw: names.append(save(name, content, **kw)) or names[-1])
    return names


def launch(api, way: str, input_: dict, url: str = ""):
    """A launch that sends photos: a zip as a multipart file part, or the URL of an uploaded zip."""
    if way == "multipart":
        form = {"input": json.dumps(input_), "input_images": SimpleUploadedFile("pets.zip", pet_zip(3))}
        return api.post("/api/v1/trainings", form, multipart=True)
    return api.post("/api/v1/trainings", {"input": {**input_, "input_images": url}})


@pytest.mark.django_db
@pytest.mark.parametrize("way", ["multipart", "url"])
@pytest.mark.parametrize("input_, field", [
    ({"trigger_word": "zxq", "resolution": 40}, "input.resolution"),  # a multiple of 16 is checked by the job service
    ({"trigger_word": "zxq", "steps": 30000}, "input.steps"),
    ({"preset": "fast"}, "input.trigger_word"),  # new datasets have no trigger word of their own
])
def test_a_refused_launch_stores_no_photo(alice_api, alice, no_queue, stored, way, input_, field):
    url = upload_zip(alice_api, pet_zip(3))["urls"]["get"] if way == "url" else ""
    datasets, files = Dataset.objects.count(), Photo.objects.count()
    del stored[:]  # the upload's own files are not the launch's
    response = launch(alice_api, way, input_, url)
    assert response.status_code == 422, response.content
    assert field in response.json()["errors"], response.json()
    assert stored == [], "nothing was stored for a launch that was refused"
    assert (Dataset.objects.count(), Photo.objects.count()) == (datasets, files) and no_queue == []


@pytest.mark.django_db(transaction=True)  # real commits: the ingest must not run inside a transaction
@pytest.mark.parametrize("way", ["multipart", "url"])
def test_a_launch_refused_after_the_ingest_leaves_no_dataset_and_no_files(alice_api, alice, no_queue, stored,
                                                                          monkeypatch, way):
    url = upload_zip(alice_api, pet_zip(3))["urls"]["get"] if way == "url" else ""
    datasets = set(Dataset.objects.values_list("pk", flat=True))
    del stored[:]
    in_transaction: list[bool] = []
    check_image = photos.check_image
    monkeypatch.setattr(photos, "check_image", lambda data: in_transaction.append(connection.in_atomic_block) or check_image(data))
    create = jobs.job_create

    def refused(**kw):  # what job_create refuses once the photos are there (e.g. all excluded meanwhile)
        raise ValidationError({"dataset": "the dataset has no photos to train on"})

    monkeypatch.setattr(jobs, "job_create", refused)
    response = launch(alice_api, way, {"trigger_word": "zxq"}, url)
    assert response.status_code == 422 and "input.dataset" in response.json()["errors"], response.content
    assert in_transaction == [False] * 3, "each photo was stored in its own short commit"
    assert len(stored) == 9, "three files per photo were stored before the refusal"
    assert not [name for name in stored if default_storage.exists(name)], "and removed with the dataset"
    assert set(Dataset.objects.values_list("pk", flat=True)) == datasets and TrainingJob.objects.count() == 0

    monkeypatch.setattr(jobs, "job_create", create)
    response = launch(alice_api, way, {"trigger_word": "zxq"}, url)
    assert response.status_code == 201, response.content
    job = TrainingJob.objects.get(pk=response.json()["id"])
    assert no_queue == [job.pk] and job.dataset.photos.count() == 3 and job.dataset.trigger_word == "zxq"
    assert all(default_storage.exists(photo.image.name) for photo in job.dataset.photos.all())


@pytest.mark.django_db
def test_a_refused_launch_leaves_an_existing_dataset_as_it_was(alice_api, alice, make_dataset, no_queue):
    dataset = make_dataset(alice, n=1)
    response = alice_api.post("/api/v1/trainings", {"input": {"dataset": dataset.pk, "trigger_word": "newword",
                                                              "autocaption_prefix": "film photo", "resolution": 40}})
    assert response.status_code == 422 and "input.resolution" in response.json()["errors"]
    dataset.refresh_from_db()
    assert (dataset.trigger_word, dataset.caption_prefix) == ("zxq", "")
