"""A model's LoRA downloads get one file name, whether taken over the API or from the model's page."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from tests.api.conftest import ApiClient

pytestmark = pytest.mark.django_db

# The API's kind of file, and the model page's kind for the same file.
SAME_FILE = {"weights": "diffusers", "kohya_weights": "kohya"}


def attachment_name(response) -> str:
    assert response.status_code == 200, response.content
    found = re.search(r'attachment; filename="([^"]+)"$', response["Content-Disposition"])
    assert found, response["Content-Disposition"]
    return found.group(1)


def names(model_id: int) -> dict[str, tuple[str, str]]:
    """Per API kind: the name the API gives the file, and the name the model page's link gives it."""
    anonymous, browser = ApiClient(None), Client()
    return {kind: (attachment_name(anonymous.get(f"/api/v1/models/{model_id}/files/{kind}")),
                   attachment_name(browser.get(reverse("gallery:model_download", args=[model_id, page_kind]))))
            for kind, page_kind in SAME_FILE.items()}


@pytest.mark.parametrize(("title", "trigger", "diffusers_name"), [
    ("Zqx the cat", "zqx", "zqx-the-cat.safetensors"),  # the title holds the trigger already
    ("Shapes & <b>friends</b>", "zqx", "shapes-friends-zqx.safetensors"),  # markup pasted in a title
    ("Demo blobs", "ZXQMIRA", "demo-blobs-ZXQMIRA.safetensors"),  # the trigger's case is what the prompt needs
    ("Café crème", "köter", "cafe-creme-koter.safetensors"),  # a safe ASCII name for every browser and S3
    ("猫", "猫", "lora.safetensors"),  # nothing left of either in ASCII
])
def test_the_api_and_the_model_page_name_each_file_alike(alice_api, alice, finished_job, title, trigger, diffusers_name):
    job = finished_job(alice)
    answer = alice_api.post("/api/v1/models", {"training": job.pk, "title": title, "trigger_word": trigger})
    assert answer.status_code == 201, answer.content
    got = names(answer.json()["id"])
    assert got["weights"] == (diffusers_name, diffusers_name)
    kohya_name = diffusers_name.replace(".safetensors", "-kohya.safetensors")
    assert got["kohya_weights"] == (kohya_name, kohya_name)
    for name, _ in got.values():
        assert name.isascii() and re.fullmatch(r"[A-Za-z0-9_.-]+", name)
