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
