"""A dataset deleted while photos are being uploaded into it: the upload answers that it is gone
(the API a 404 problem, the page a 404 JSON its uploader shows), never a 500, and no photo row,
upload row or stored file of the upload is left behind.

The race is made deterministic by deleting the dataset from inside a step of the ingest (as the
DELETE request would, through the same service), or right after it. The tests commit for real
(transaction=True) so SQLite checks foreign keys, as it does for a live server.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Callable

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from flux_studio.api import views_files
from flux_studio.api.models import FileUpload
from tests.conftest import make_image_bytes
from trainer import photos as photo_service
from trainer.datasets import dataset_delete
from trainer.models import Dataset, Photo

pytestmark = pytest.mark.django_db(transaction=True)


def stored_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def images(n: int) -> list[tuple[str, bytes]]:
    return [(f"p{i}.png", make_image_bytes(300, 300, color=(30 * i, 90, 60), pattern=i)) for i in range(1, n + 1)]


def post_files(api, files: list[tuple[str, bytes]], dataset: Dataset):
    data = {"file": [SimpleUploadedFile(name, content) for name, content in files], "dataset": str(dataset.pk)}
    return api.post("/api/v1/files", data, multipart=True)


@pytest.fixture
def delete_during_ingest(monkeypatch) -> Callable[[Dataset, int], None]:
    """Delete the dataset while the n-th photo is being checked (after its early checks, before
    it is stored), as a DELETE /datasets/{id} arriving then would."""

    def arm(dataset: Dataset, nth: int) -> None:
        real = photo_service._thumbnail
        calls = {"n": 0}

        def thumbnail(image):
            calls["n"] += 1
            if calls["n"] == nth:
                dataset_delete(dataset=Dataset.objects.get(pk=dataset.pk))
            return real(image)

        monkeypatch.setattr(photo_service, "_thumbnail", thumbnail)

    return arm


def assert_nothing_left(dataset_pk: int) -> None:
    assert not Dataset.objects.filter(pk=dataset_pk).exists()
    assert not Photo.objects.exists() and not FileUpload.objects.exists()
    assert stored_files() == [], "the upload's files must not stay in storage"


@pytest.mark.parametrize("nth", [1, 3, 7], ids=["first", "middle", "last"])
def test_api_upload_into_a_dataset_deleted_meanwhile_is_a_404(alice_api, alice, delete_during_ingest, nth):
    dataset = Dataset.objects.create(owner=alice, name="going away")
    delete_during_ingest(dataset, nth)
    response = post_files(alice_api, images(7), dataset)
    assert response.status_code == 404, response.content
    body = response.json()
    assert response["Content-Type"] == "application/problem+json"
    assert f"dataset {dataset.pk} was deleted while the upload ran" in body["detail"]
    assert "none of the files were kept" in body["detail"]
    assert_nothing_left(dataset.pk)


def test_api_upload_whose_dataset_goes_after_the_ingest_is_a_404(alice_api, alice, monkeypatch):
    """Every photo stored, then the dataset deleted just before the upload's own row is written
    (where the tester saw the IntegrityError)."""
    dataset = Dataset.objects.create(owner=alice, name="going away")
    real = views_files.ingest_uploads

    def ingest_then_delete(target, uploads):
        result = real(target, uploads)
        assert len(result[0]) == 3, result
        dataset_delete(dataset=Dataset.objects.get(pk=target.pk))
        return result

    monkeypatch.setattr(views_files, "ingest_uploads", ingest_then_delete)
    response = post_files(alice_api, images(3), dataset)
    assert response.status_code == 404, response.content
    assert "was deleted while the upload ran" in response.json()["detail"]
    assert_nothing_left(dataset.pk)


def test_api_zip_into_a_dataset_deleted_meanwhile_is_a_404(alice_api, alice, delete_during_ingest):
    dataset = Dataset.objects.create(owner=alice, name="going away")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in images(4):
            z.writestr(name, data)
    delete_during_ingest(dataset, 2)
    response = post_files(alice_api, [("set.zip", archive.getvalue())], dataset)
    assert response.status_code == 404, response.content
    assert_nothing_left(dataset.pk)


def test_api_upload_still_works_and_other_datasets_keep_their_files(alice_api, alice, delete_during_ingest):
    """The re-check does not get in the way of a normal upload, and cleaning up after a deleted
    dataset touches only the upload's own files."""
    kept = Dataset.objects.create(owner=alice, name="kept")
    assert post_files(alice_api, images(2), kept).status_code == 201
    before = sorted(stored_files())
    assert len(before) == 6  # original, training copy, thumbnail per photo
    doomed = Dataset.objects.create(owner=alice, name="going away")
    delete_during_ingest(doomed, 2)
    response = post_files(alice_api, [(f"q{i}.png", make_image_bytes(320, 320, color=(10, 200 - 40 * i, 90), pattern=i + 4))
                                      for i in range(3)], doomed)
    assert response.status_code == 404, response.content
    assert sorted(stored_files()) == before
    assert kept.photos.count() == 2 and FileUpload.objects.filter(dataset=kept).count() == 1


def test_photo_ingest_into_a_deleted_dataset_is_refused_and_stores_nothing(alice, delete_during_ingest):
    dataset = Dataset.objects.create(owner=alice, name="going away")
    delete_during_ingest(dataset, 1)
    with pytest.raises(photo_service.DatasetGone, match="deleted while this upload ran"):
        photo_service.photo_ingest(dataset=dataset, data=images(1)[0][1], name="p1.png")
    assert_nothing_left(dataset.pk)


def test_page_upload_into_a_dataset_deleted_meanwhile_says_so(alice, delete_during_ingest):
    page = Client()
    page.force_login(alice)
    dataset = Dataset.objects.create(owner=alice, name="going away")
    delete_during_ingest(dataset, 1)
    url = reverse("trainer:photo_upload", args=[dataset.pk])
    response = page.post(url, {"file": SimpleUploadedFile("p1.png", images(1)[0][1])}, headers={"Accept": "application/json"})
    assert response.status_code == 404, response.content
    body = response.json()
    assert body["ok"] is False and "deleted while p1.png was uploading" in body["error"]
    # The page's uploader shows `results`: the reason is next to the file, not "server error".
    assert [r["reason"] for r in body["results"]] == [photo_service.DATASET_GONE]
    assert_nothing_left(dataset.pk)


def test_page_upload_whose_dataset_goes_after_the_photo_is_stored_says_so(alice, monkeypatch):
    page = Client()
    page.force_login(alice)
    dataset = Dataset.objects.create(owner=alice, name="going away")
    real = photo_service.upload_ingest

    def ingest_then_delete(**kwargs):
        outcomes = real(**kwargs)
        assert outcomes[0].ok, outcomes
        dataset_delete(dataset=Dataset.objects.get(pk=dataset.pk))
        return outcomes

    monkeypatch.setattr(photo_service, "upload_ingest", ingest_then_delete)
    response = page.post(reverse("trainer:photo_upload", args=[dataset.pk]),
                         {"file": SimpleUploadedFile("p1.png", images(1)[0][1])})
    assert response.status_code == 404, response.content
    assert_nothing_left(dataset.pk)


def all_stored() -> set[str]:
    """Every name in the studio's storage (local folder or, scaled out, the S3 bucket)."""
    from django.core.files.storage import default_storage

    names: set[str] = set()
    folders = [""]
    while folders:
        folder = folders.pop()
        try:
            subfolders, files = default_storage.listdir(folder)
        except FileNotFoundError:  # local storage before anything was stored
            continue
        names |= {f"{folder}{name}" for name in files}
        folders += [f"{folder}{name}/" for name in subfolders]
    return names


@pytest.mark.services
def test_a_photo_uploaded_while_its_dataset_is_deleted_leaves_no_files(alice):
    """DELETE /datasets/{id} and a photo's upload at once. The delete lists the dataset's photos (to
    delete their files once the rows are gone), then deletes the rows; a photo stored between the
    two would go with the dataset's rows while its files, not on the list, stayed in storage for
    good. The delete locks the dataset's row first, as the upload does to add its photo, so the
    upload waits, then says the dataset is gone and keeps nothing.

    The upload runs in a thread of its own once the delete has listed the photos; the delete goes
    on when the upload has finished or waits on the delete's lock. PostgreSQL only: on SQLite each
    transaction takes the whole database's write lock as it begins (BEGIN IMMEDIATE), which keeps
    the two apart whatever the code locks, and cannot be seen from outside."""
    import threading
    import time

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (FLUX_TEST_SHAPE=scaled): SQLite serializes whole transactions")
    before = all_stored()
    (_, first), (_, late) = images(2)
    dataset = Dataset.objects.create(owner=alice, name="going away")
    photo_service.photo_ingest(dataset=dataset, data=first, name="p1.png")
    upload: dict[str, object] = {}

    def upload_late_photo() -> None:
        try:
            upload["photo"] = photo_service.photo_ingest(dataset=Dataset.objects.get(pk=dataset.pk), data=late, name="late.png")
        except photo_service.DatasetGone as exc:
            upload["refused"] = str(exc)
        except BaseException as exc:  # noqa: BLE001 (reported by the assertion below)
            upload["error"] = repr(exc)
        finally:
            connections.close_all()  # this thread's connection; PostgreSQL drops the test database after

    uploader = threading.Thread(target=upload_late_photo)

    def waits_on_this_transaction() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))")
            return cursor.fetchone()[0] > 0

    doomed = Dataset.objects.get(pk=dataset.pk)
    delete_rows = doomed.delete

    def delete_once_the_upload_ran_or_waits(*args, **kwargs):  # called by dataset_delete after listing the photos
        uploader.start()
        deadline = time.monotonic() + 120
        while uploader.is_alive() and not waits_on_this_transaction():
            assert time.monotonic() < deadline, "the upload neither finished nor waited for the delete"
            uploader.join(0.05)
        return delete_rows(*args, **kwargs)

    doomed.delete = delete_once_the_upload_ran_or_waits
    dataset_delete(dataset=doomed)
    uploader.join(120)
    assert not uploader.is_alive()
    assert sorted(all_stored() - before) == [], "the photos' files must not stay in storage"
    assert "refused" in upload, f"the upload into the deleted dataset was not refused: {upload}"
    assert not Dataset.objects.filter(pk=dataset.pk).exists() and not Photo.objects.exists()
