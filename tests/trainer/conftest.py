"""Dataset studio fixtures: alice's dataset, uploads through the real endpoint, zips."""

from __future__ import annotations

import io
import zipfile
from typing import Callable

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from trainer.models import Dataset, Photo
from trainer.photos import photo_ingest


@pytest.fixture
def dataset(alice) -> Dataset:
    return Dataset.objects.create(owner=alice, name="Mira the cat", trigger_word="MIRAZX")


@pytest.fixture
def add_photo(dataset, image_bytes) -> Callable[..., Photo]:
    """Ingest a distinct small photo (pattern n) straight through the service."""
    counter = {"n": 0}

    def add(pattern: int | None = None, caption: str | None = None, size: int = 320) -> Photo:
        counter["n"] += 1
        n = counter["n"] if pattern is None else pattern
        data = image_bytes(size, size, color=((40 * n) % 256, (90 + 30 * n) % 256, 60), pattern=n)
        return photo_ingest(dataset=dataset, data=data, name=f"p{n}.png", caption=caption)

    return add


@pytest.fixture
def upload(alice_client, dataset) -> Callable[..., object]:
    def post(name: str, data: bytes, client=None, pk: int | None = None):
        url = reverse("trainer:photo_upload", args=[pk or dataset.pk])
        return (client or alice_client).post(url, {"file": SimpleUploadedFile(name, data)})

    return post


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    # alice and bob are created with hashed passwords; PBKDF2 costs ~0.5 s each on this machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
