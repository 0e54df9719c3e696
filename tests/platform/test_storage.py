"""Files go to the configured storage; private files are served only through checked views.

In the scaled-out run the storage is an S3-compatible server on loopback (moto's server mode,
started by tests/env_plugin.py), so bytes cross HTTP both ways and downloads are signed URLs.
"""

from __future__ import annotations

import pytest
import requests
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from flux_studio.files import serve_file
from tests.api.conftest import finished_job  # noqa: F401  (a fixture: a succeeded job with a sample)

pytestmark = [pytest.mark.services, pytest.mark.django_db]


def test_bytes_round_trip_through_the_configured_storage():
    name = default_storage.save("users/1/tests/hello.bin", ContentFile(b"\x00flux studio\xff"))
    try:
        with default_storage.open(name, "rb") as fh:
            assert fh.read() == b"\x00flux studio\xff"
        if settings.S3_BUCKET:
            import boto3

            s3 = boto3.client("s3", endpoint_url=settings.STORAGES["default"]["OPTIONS"]["endpoint_url"],
                              region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
            body = s3.get_object(Bucket=settings.S3_BUCKET, Key=name)["Body"].read()
            assert body == b"\x00flux studio\xff"
    finally:
        default_storage.delete(name)


@pytest.mark.skipif(not settings.S3_BUCKET, reason="signed URLs exist only in the scaled-out (S3) shape")
def test_private_file_is_a_short_lived_signed_url():
    from django.db.models.fields.files import FieldFile
    from trainer.models import TrainingJob

    name = default_storage.save("users/1/tests/lora.safetensors", ContentFile(b"weights"))
    field = FieldFile(None, TrainingJob._meta.get_field("lora_file"), name)
    response = serve_file(field, download_name="zxq_lora.safetensors")
    assert response.status_code == 302
    url = response["Location"]
    assert "X-Amz-Signature" in url and "X-Amz-Expires" in url
    fetched = requests.get(url, timeout=10)
    assert fetched.content == b"weights"
    assert "zxq_lora.safetensors" in fetched.headers.get("Content-Disposition", "")
    unsigned = requests.get(url.split("?")[0], timeout=10)
    assert unsigned.status_code == 403
    default_storage.delete(name)


@pytest.mark.skipif(not settings.S3_BUCKET, reason="signed URLs exist only in the scaled-out (S3) shape")
def test_published_thumbnail_is_cached_briefly_inside_the_url_lifetime(alice, finished_job):
    """A published file: the redirect may be shared for less than the signed URL lives, and the
    bytes behind it carry the same short, revalidated caching; a private file stays private."""
    from urllib.parse import parse_qs, urlparse

    from django.test import Client
    from django.urls import reverse

    from gallery import services_gallery

    model = services_gallery.draft_for_training(owner=alice, job=finished_job(alice))
    example = model.examples.get()
    thumb = reverse("gallery:example_image", args=[example.pk]) + "?size=thumb"
    owner = Client()
    owner.force_login(alice)
    draft_redirect = owner.get(thumb)
    assert draft_redirect.status_code == 302 and draft_redirect["Cache-Control"].startswith("private")
    assert requests.get(draft_redirect["Location"], timeout=10).headers["Cache-Control"].startswith("private")

    services_gallery.gallery_model_publish(model=model)
    redirect = Client().get(thumb)
    assert redirect.status_code == 302
    cache = dict(part.strip().partition("=")[::2] for part in redirect["Cache-Control"].split(","))
    lifetime = int(parse_qs(urlparse(redirect["Location"]).query)["X-Amz-Expires"][0])
    assert "public" in cache and 0 < int(cache["max-age"]) < lifetime
    fetched = requests.get(redirect["Location"], timeout=10)
    assert fetched.status_code == 200 and fetched.content[:3] == b"\xff\xd8\xff"  # the JPEG thumbnail
    assert fetched.headers["Cache-Control"] == "public, max-age=300, must-revalidate"
