"""API fixtures: tokens for alice and bob, a client that sends them, finished jobs without torch."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from django.core.files.base import ContentFile
from django.test import Client

from flux_studio.api.tokens import token_create
from trainer import jobs
from trainer.models import JobState, TrainingJob


class ApiClient:
    """Django's test client with a bearer token and JSON bodies."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **kw: Any):
        return self.client.get(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def delete(self, path: str, **kw: Any):
        return self.client.delete(path, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    def patch(self, path: str, data: Any = None, **kw: Any):
        headers = {**self.headers, **kw.pop("headers", {})}
        body = json.dumps(data) if data is not None else ""
        return self.client.patch(path, body, content_type="application/json", headers=headers, **kw)

    def post(self, path: str, data: Any = None, **kw: Any):
        headers = {**self.headers, **kw.pop("headers", {})}
        if kw.pop("multipart", False):
            return self.client.post(path, data, headers=headers, **kw)
        body = json.dumps(data) if data is not None else ""
        return self.client.post(path, body, content_type="application/json", headers=headers, **kw)


@pytest.fixture
def alice_token(alice) -> str:
    return token_create(owner=alice, name="alice script")[1]


@pytest.fixture
def bob_token(bob) -> str:
    return token_create(owner=bob, name="bob script")[1]


@pytest.fixture
def alice_api(alice_token) -> ApiClient:
    return ApiClient(alice_token)


@pytest.fixture
def bob_api(bob_token) -> ApiClient:
    return ApiClient(bob_token)


@pytest.fixture
def no_queue(monkeypatch) -> list[int]:
    """Jobs are created but not run: what would be enqueued is recorded."""
    enqueued: list[int] = []
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: enqueued.append(job.pk))
    return enqueued


@pytest.fixture
def finished_job() -> Callable[..., TrainingJob]:
    """A succeeded job with (fake) LoRA files and one sample: enough for the API, no torch."""

    def make(owner, trigger: str = "zqx", base: str = "tiny") -> TrainingJob:
        job = TrainingJob.objects.create(
            owner=owner, name=f"{owner.username} lora", state=JobState.SUCCEEDED, base_model=base, trigger_word=trigger,
            config={"preset": "fast", "learning_rate": 1e-3, "lora_rank": 4, "resolution": 64, "batch_size": 1, "seed": 7},
            snapshot=[{"image": "x.png", "caption": f"a photo of {trigger}"}], total_steps=4, step=4,
        )
        job.lora_file.save("lora.safetensors", ContentFile(b"fake-lora-" + trigger.encode()), save=False)
        job.kohya_file.save("lora_kohya.safetensors", ContentFile(b"fake-kohya"), save=False)
        job.save()
        from trainer.models import TrainingSample

        sample = TrainingSample(job=job, step=4, prompt=f"a photo of {trigger}")
        from tests.conftest import make_image_bytes

        sample.image.save("s.png", ContentFile(make_image_bytes(64, 64)), save=True)
        return job

    return make


def body_of(response) -> bytes:
    """A download's bytes: streamed (local storage) or behind a signed S3 redirect (scaled out)."""
    if response.status_code == 302:
        import requests

        return requests.get(response["Location"], timeout=10).content
    return b"".join(response.streaming_content) if response.streaming else response.content


def all_pages(api: ApiClient, url: str, page_size: int) -> list[int]:
    """Follow `next` links from the first page; the ids seen, in order (each page within size)."""
    seen: list[int] = []
    url = f"{url}?page_size={page_size}"
    while url:
        page = api.get(url).json()
        assert len(page["results"]) <= page_size
        seen += [row["id"] for row in page["results"]]
        url = page["next"]
    return seen
