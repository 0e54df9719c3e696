"""/files: uploads go through the photo ingest; rejected files say why; owner-only access."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.api.conftest import body_of
from tests.conftest import make_image_bytes
from trainer.models import Dataset, Photo

pytestmark = pytest.mark.django_db


def upload(api, *files, **fields):
    data = {"file": [SimpleUploadedFile(name, content) for name, content in files], **fields}
    return api.post("/api/v1/files", data, multipart=True)


def test_upload_images_and_a_zip_into_the_api_dataset(alice_api, alice):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.png", make_image_bytes(300, 300, pattern=1))
        z.writestr("a.txt", "a photo of zxq on grass")
        z.writestr("notes.pdf", b"%PDF")
    response = upload(alice_api, ("one.png", make_image_bytes(300, 300, pattern=3)), ("set.zip", archive.getvalue()),
                      ("tiny.png", make_image_bytes(40, 40)))
    assert response.status_code == 201, response.content
    body = response.json()
    assert [f["name"] for f in body["files"]] == ["one.png", "a.png"]
    assert body["files"][1]["caption"] == "a photo of zxq on grass"
    reasons = {r["name"]: r["reason"] for r in body["rejected"]}
    assert "too small" in reasons["tiny.png"] and "not an image" in reasons["set.zip › notes.pdf"]
    dataset = Dataset.objects.get(pk=body["dataset"], owner=alice)
    assert dataset.name == "API uploads" and dataset.photos.count() == 2
    again = upload(alice_api, ("two.png", make_image_bytes(300, 300, pattern=5)))
    assert again.json()["dataset"] == dataset.pk, "later uploads extend the same dataset"


def test_all_rejected_is_a_422_with_reasons(alice_api, alice):
    response = upload(alice_api, ("bad.png", b"not an image at all"))
    assert response.status_code == 422
    body = response.json()
    assert body["rejected"][0]["name"] == "bad.png" and "no file was accepted" in body["detail"]
    assert body["errors"]["file"] == [body["detail"]] and body["instance"] == "/api/v1/files", "a problem like the others"
    assert Dataset.objects.get(pk=body["dataset"]).photos.count() == 0


def test_upload_needs_multipart_and_a_file(alice_api):
    assert alice_api.post("/api/v1/files", {"x": 1}).status_code == 415
    assert alice_api.post("/api/v1/files", {}, multipart=True).status_code == 422


def test_upload_into_someone_elses_dataset_is_404(alice_api, bob):
    theirs = Dataset.objects.create(owner=bob, name="bob's")
    response = upload(alice_api, ("one.png", make_image_bytes(300, 300)), dataset=str(theirs.pk))
    assert response.status_code == 404 and not theirs.photos.exists()


def test_the_training_copy_and_thumbnail_download_too_for_their_owner_only(alice_api, bob_api):
    from PIL import Image

    file = upload(alice_api, ("wide.png", make_image_bytes(900, 600))).json()["files"][0]
    image = alice_api.get(file["urls"]["image"])
    assert image.status_code == 200 and "wide-image." in image["Content-Disposition"]
    thumb = alice_api.get(file["urls"]["thumbnail"])
    assert thumb.status_code == 200 and "wide-thumbnail." in thumb["Content-Disposition"]
    with Image.open(io.BytesIO(body_of(image))) as full, Image.open(io.BytesIO(body_of(thumb))) as small:
        assert full.size == (900, 600) and max(small.size) < 900 and small.size[0] > small.size[1]
    assert alice_api.get(f"/api/v1/files/{file['id']}/download/original").status_code == 404
    for url in (file["urls"]["image"], file["urls"]["thumbnail"]):
        assert bob_api.get(url).status_code == 404


def test_get_download_delete_and_ownership(alice_api, bob_api):
    file = upload(alice_api, ("one.png", make_image_bytes(300, 300))).json()["files"][0]
    assert alice_api.get(f"/api/v1/files/{file['id']}").json()["checksums"]["sha256"] == file["checksums"]["sha256"]
    download = alice_api.get(file["urls"]["download"])
    assert download.status_code == 200 and body_of(download)[:4] == b"\x89PNG"
    for path in (f"/api/v1/files/{file['id']}", file["urls"]["download"]):
        assert bob_api.get(path).status_code == 404
    assert bob_api.delete(f"/api/v1/files/{file['id']}").status_code == 404
    assert bob_api.get("/api/v1/files").json()["results"] == []
    assert alice_api.delete(f"/api/v1/files/{file['id']}").status_code == 204
    assert not Photo.objects.filter(pk=file["id"]).exists()
    assert alice_api.get(f"/api/v1/files/{file['id']}").status_code == 404


def test_list_is_paginated_with_a_cursor(alice_api):
    ids = [f["id"] for f in upload(alice_api, *[(f"p{i}.png", make_image_bytes(300, 300, pattern=i, color=(20 * i, 90, 10)))
                                              for i in range(5)]).json()["files"]]
    first = alice_api.get("/api/v1/files?page_size=2").json()
    assert [f["id"] for f in first["results"]] == sorted(ids, reverse=True)[:2] and first["next"]
    seen = [f["id"] for f in first["results"]]
    url = first["next"]
    while url:
        page = alice_api.get(url).json()
        seen += [f["id"] for f in page["results"]]
        url = page["next"]
    assert seen == sorted(ids, reverse=True)
    assert alice_api.get("/api/v1/files?cursor=garbage").status_code == 422
    assert alice_api.get("/api/v1/files?page_size=0").status_code == 422
