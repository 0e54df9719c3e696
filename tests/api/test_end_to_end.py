"""Through the API only, with real workers: upload, train on the tiny base, get a signed webhook
(after a failed first delivery), download the LoRA, then generate with it and fetch the images."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.api.conftest import ApiClient, body_of
from tests.api.test_webhooks import Receiver, verify
from tests.conftest import make_image_bytes, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.services]


def test_train_wait_generate(start_worker, alice, monkeypatch):
    from flux_studio.api.tokens import token_create

    monkeypatch.setenv("API_WEBHOOK_RETRY_BASE_S", "0.5")
    gpu, light = start_worker("gpu"), start_worker("light")
    api = ApiClient(token_create(owner=alice, name="e2e")[1])
    receiver = Receiver(fail_first=1)
    try:
        photos = [SimpleUploadedFile(f"p{i}.png", make_image_bytes(300, 300, color=(60 * i, 90, 30), pattern=i)) for i in range(3)]
        uploaded = api.post("/api/v1/files", {"file": photos}, multipart=True).json()
        assert len(uploaded["files"]) == 3, uploaded
        created = api.post("/api/v1/trainings", {
            "input": {"dataset": uploaded["dataset"], "trigger_word": "zxq", "preset": "fast", "base_model": "tiny",
                      "steps": 12, "sample_every": 6, "sample_prompts": ["a photo of zxq"]},
            "webhook": receiver.url, "webhook_events_filter": ["completed"],
        })
        assert created.status_code == 201, created.content
        url = created.json()["urls"]["get"]
        training = wait_for(lambda: (t := api.get(url).json())["status"] in ("succeeded", "failed", "canceled") and t,
                            timeout=300, interval=0.5, message="training did not finish")
        assert training["status"] == "succeeded", (training["error"], gpu.output()[-3000:])
        assert training["metrics"]["step"] == 12 and training["samples"] and training["logs"]
        weights = body_of(api.get(training["output"]["weights"]))
        header = json.loads(weights[8:8 + int.from_bytes(weights[:8], "little")])
        assert any(".lora_A." in key for key in header)

        wait_for(lambda: len(receiver.requests) >= 2, timeout=60, message=f"no retried webhook: {light.output()[-2000:]}")
        secret = api.get("/api/v1/webhooks/default/secret").json()["key"]
        delivered = receiver.requests[1]
        assert verify(secret, delivered["headers"], delivered["body"])
        assert json.loads(delivered["body"])["status"] == "succeeded"
        log = api.get("/api/v1/webhooks/deliveries").json()["results"]
        assert [(row["attempt"], row["status_code"]) for row in reversed(log)] == [(1, 500), (2, 204)]

        prediction = api.post("/api/v1/predictions", {"input": {
            "prompt": "a photo of zxq", "loras": [{"training": training["id"], "scale": 1.0}], "num_outputs": 2, "seed": 3,
        }}, headers={"Prefer": "wait=60"})
        body = prediction.json()
        if body["status"] not in ("succeeded", "failed"):  # first load of the base can outlast 60 s
            body = wait_for(lambda: (p := api.get(body["urls"]["get"]).json())["status"] in ("succeeded", "failed") and p,
                            timeout=240, interval=0.5)
        assert body["status"] == "succeeded", (body["error"], gpu.output()[-3000:])
        assert len(body["output"]) == 2 and body_of(api.get(body["output"][0]))[:4] == b"\x89PNG"
    finally:
        receiver.server.shutdown()


def test_prefer_wait_answers_with_the_finished_prediction(start_worker, alice):
    """A real GPU worker finishes within the wait: the POST itself answers succeeded, with image URLs."""
    from flux_studio.api.tokens import token_create

    gpu = start_worker("gpu")
    api = ApiClient(token_create(owner=alice, name="wait")[1])
    request = {"input": {"prompt": "a red circle", "base_model": "tiny", "steps": 2, "width": 64, "height": 64, "seed": 1}}
    # The first prediction loads the base (can take long on a busy machine): wait for it by polling.
    first = api.post("/api/v1/predictions", request).json()
    warm = wait_for(lambda: (p := api.get(first["urls"]["get"]).json())["status"] in ("succeeded", "failed") and p,
                    timeout=240, interval=0.5, message=f"warm-up prediction did not finish: {gpu.output()[-2000:]}")
    assert warm["status"] == "succeeded", (warm["error"], gpu.output()[-3000:])

    request["input"].update(seed=2, num_outputs=2)
    response = api.post("/api/v1/predictions", request, headers={"Prefer": "wait=60"})
    assert response.status_code == 201 and response["Preference-Applied"] == "wait=60"
    body = response.json()
    assert body["status"] == "succeeded", (body, gpu.output()[-3000:])
    assert body["completed_at"] and body["metrics"]["seeds"] == [2, 3] and len(body["output"]) == 2
    assert body_of(api.get(body["output"][1]))[:4] == b"\x89PNG"
