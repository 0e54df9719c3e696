"""A photo whose stored file is gone (storage lost it): its download says so (410 / 404), a duplicate or a
training from it is refused naming it, and the dataset export and a training's data
download still answer, on the page and over the API, with the archive of what is there and a
MISSING_PHOTOS.txt naming what is missing and what to do, never a server error.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from flux_studio.api.tokens import token_create
from tests.api.conftest import ApiClient, body_of
from trainer import jobs
from trainer.models import Dataset, JobState, Photo, TrainingJob

pytestmark = pytest.mark.django_db


def contents(response) -> dict[str, bytes]:
    assert response.status_code == 200, response.content if not response.streaming else response.status_code
    assert response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body_of(response))) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def lose(photo: Photo) -> None:
    """Storage loses the photo's training copy (what both downloads read)."""
    default_storage.delete(photo.image.name)
    assert not default_storage.exists(photo.image.name)


@pytest.fixture
def api(alice) -> ApiClient:
    return ApiClient(token_create(owner=alice, name="alice script")[1])


@pytest.fixture
def page(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def three(dataset, add_photo) -> list[Photo]:
    return [add_photo(caption=f"MIRAZX number {n}") for n in (1, 2, 3)]


def export_both(page: Client, api: ApiClient, dataset: Dataset) -> list[dict[str, bytes]]:
    return [contents(page.get(reverse("trainer:dataset_export", args=[dataset.pk]))),
            contents(api.get(f"/api/v1/datasets/{dataset.pk}/export"))]


def test_export_leaves_out_a_missing_photo_and_says_so(page, api, dataset, three):
    first, second, third = three
    lose(second)
    for files in export_both(page, api, dataset):
        assert sorted(files) == ["MISSING_PHOTOS.txt", "p1.jpg", "p1.txt", "p3.jpg", "p3.txt"]
        assert files["p3.txt"] == b"MIRAZX number 3\n"
        note = files["MISSING_PHOTOS.txt"].decode()
        assert f"p2.png (photo id {second.pk})" in note
        assert "1 photo could not be put in this export: the stored file is missing" in note
        assert "Remove them from the dataset or upload them again" in note
        assert default_storage.path("") not in note, "no server path in the note"


def test_export_with_every_file_missing_is_just_the_note(page, api, dataset, three):
    for photo in three:
        lose(photo)
    for files in export_both(page, api, dataset):
        assert list(files) == ["MISSING_PHOTOS.txt"]
        assert "3 photos could not be put in this export" in files["MISSING_PHOTOS.txt"].decode()


def test_export_without_missing_files_has_no_note(page, api, dataset, three):
    for files in export_both(page, api, dataset):
        assert "MISSING_PHOTOS.txt" not in files and len(files) == 6


def test_the_note_does_not_overwrite_a_photo_named_like_it(page, api, dataset, add_photo, image_bytes):
    from trainer.photos import photo_ingest

    named = photo_ingest(dataset=dataset, data=image_bytes(320, 320, pattern=9), name="MISSING_PHOTOS.png",
                         caption="MIRAZX by the window")
    lost = add_photo()
    lose(lost)
    for files in export_both(page, api, dataset):
        assert files["MISSING_PHOTOS.txt"] == b"MIRAZX by the window\n", "the photo's own caption stays"
        assert "MISSING_PHOTOS.jpg" in files
        assert f"(photo id {lost.pk})" in files["MISSING_PHOTOS_2.txt"].decode()
    assert named.pk


def training_of(dataset: Dataset) -> TrainingJob:
    """A finished training of the dataset as launched (its frozen snapshot), without running it."""
    return TrainingJob.objects.create(
        owner=dataset.owner, dataset=dataset, name="mira lora", state=JobState.FAILED, base_model="tiny",
        trigger_word=dataset.trigger_word, config={"preset": "fast"}, snapshot=jobs.snapshot_of(dataset, dataset.trigger_word),
        total_steps=4,
    )


def training_data_both(page: Client, api: ApiClient, job: TrainingJob) -> list[dict[str, bytes]]:
    return [contents(page.get(reverse("trainer:job_download", args=[job.pk, "data"]))),
            contents(api.get(f"/api/v1/trainings/{job.pk}/files/training_data"))]


def test_training_data_leaves_out_a_missing_photo_and_says_so(page, api, dataset, three):
    job = training_of(dataset)
    first, second, third = three
    second_pk = second.pk
    lose(second)
    second.delete()  # the photo itself may be gone from the dataset since: the note still names its file
    lose(third)
    for files in training_data_both(page, api, job):
        assert sorted(files) == ["MISSING_PHOTOS.txt", "dataset/0000.jpg", "dataset/0000.txt"]
        assert files["dataset/0000.txt"] == b"MIRAZX number 1"
        note = files["MISSING_PHOTOS.txt"].decode()
        assert "2 photos could not be put in this training's data" in note
        assert f"dataset/0001.jpg (photo id {second_pk}, since deleted)" in note
        assert f"dataset/0002.jpg (p3.png, photo id {third.pk})" in note
        assert "remove them from the dataset or upload them again" in note
        assert default_storage.path("") not in note, "no server path in the note"


def test_training_data_without_missing_files_has_no_note(page, api, dataset, three):
    job = training_of(dataset)
    for files in training_data_both(page, api, job):
        assert sorted(files) == [f"dataset/000{n}.{ext}" for n in range(3) for ext in ("jpg", "txt")]


def lose_original(photo: Photo) -> None:
    default_storage.delete(photo.original.name)
    assert not default_storage.exists(photo.original.name)


def stored_files() -> set[str]:
    from django.conf import settings

    return {str(p.relative_to(settings.MEDIA_ROOT)) for p in settings.MEDIA_ROOT.rglob("*") if p.is_file()}


def test_downloading_a_lost_original_says_it_is_gone(page, api, dataset, three):
    lose_original(three[1])
    response = api.get(f"/api/v1/files/{three[1].pk}/download")
    assert response.status_code == 410 and response["Content-Type"] == "application/problem+json"
    assert "missing" in response.json()["detail"] and three[1].original_name in response.json()["detail"]
    assert api.get(f"/api/v1/files/{three[0].pk}/download").status_code == 200, "the others still download"
    lost = page.get(reverse("trainer:photo_file", args=[dataset.pk, three[1].pk, "original"]))
    assert lost.status_code == 404 and "Nothing here" in lost.content.decode()


def test_a_training_from_files_with_a_lost_one_is_refused_naming_it(api, dataset, three, monkeypatch,
                                                                    django_capture_on_commit_callbacks):
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)
    lose_original(three[2])
    before = (set(Dataset.objects.values_list("pk", flat=True)), stored_files())
    with django_capture_on_commit_callbacks(execute=True):  # the refused dataset's files go once it is deleted
        response = api.post("/api/v1/trainings", {"input": {"files": [p.pk for p in three], "trigger_word": "MIRAZX"}})
    assert response.status_code == 422, response.content
    [message] = response.json()["errors"]["input.files"]
    assert f"{three[2].original_name} (file {three[2].pk})" in message and "missing" in message
    assert (set(Dataset.objects.values_list("pk", flat=True)), stored_files()) == before, "no half-made dataset left"
    assert not TrainingJob.objects.exists()


def test_duplicating_a_dataset_with_a_lost_photo_is_refused_and_leaves_nothing(page, api, dataset, three):
    lose_original(three[0])
    before = (set(Dataset.objects.values_list("pk", flat=True)), stored_files())
    response = api.post(f"/api/v1/datasets/{dataset.pk}/duplicate", {})
    assert response.status_code == 422, response.content
    assert three[0].original_name in response.json()["detail"] and "storage lost the files of 1 photo" in response.json()["detail"]
    shown = page.post(reverse("trainer:dataset_duplicate", args=[dataset.pk]), follow=True)
    assert shown.redirect_chain[-1][0] == dataset.get_absolute_url()
    assert "storage lost the files of 1 photo" in shown.content.decode()
    assert (set(Dataset.objects.values_list("pk", flat=True)), stored_files()) == before, "no copy or copied file left"
