"""A real worker process trains the tiny model while a WebSocket client watches.

Also: cancel stops within a step and keeps a checkpoint; a worker killed with SIGKILL is
detected by the next worker (here with another WORK_DIR, like a second GPU machine), which
resumes the job from its stored checkpoint (the step count goes on).
Runs in the embedded shape and again against Redis/PostgreSQL/S3 (marker `services`).
"""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import reverse
from safetensors.torch import load as load_safetensors

from flux_studio.relay import relay
from flux_studio.routing import websocket_urlpatterns
from trainer import jobs
from trainer.models import JobState, TrainingJob
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.services]


def watch(user, job: TrainingJob, until, timeout: float = 240) -> list[dict]:
    """Collect the job's events (replay, then live) until `until(events)` is true."""

    async def scenario() -> list[dict]:
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/events/training/{job.pk}/")
        communicator.scope["user"] = user
        assert (await communicator.connect())[0]
        seen: list[dict] = []
        try:
            while not until(seen):
                seen.append(await communicator.receive_json_from(timeout=timeout))
        finally:
            await communicator.disconnect()
            await relay.stop()
        return seen

    return async_to_sync(scenario)()


def fetch(client, url: str) -> bytes:
    """A private file as its owner gets it: streamed (local storage) or via a signed URL (S3)."""
    response = client.get(url)
    if response.status_code == 302:
        import requests

        return requests.get(response["Location"], timeout=10).content
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def final_state(events: list[dict]) -> bool:
    return any(e["kind"] == "state" and e["data"]["state"] in ("succeeded", "failed", "canceled") for e in events)


def test_worker_trains_while_the_page_watches(start_worker, alice, client, make_dataset):
    worker = start_worker("gpu")
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=3), preset="fast", base_model="tiny",
                          overrides={"steps": 12, "sample_every": 6}, sample_prompts=["a photo of zxq"])
    events = watch(alice, job, final_state)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.error, worker.output()[-3000:])
    states = [e["data"]["state"] for e in events if e["kind"] == "state"]
    assert states[0] == "starting" and "training" in states and states[-1] == "succeeded"
    progress = [e["data"] for e in events if e["kind"] == "progress"]
    assert progress[-1]["step"] == 12 and progress[-1]["total"] == 12
    steps_seen = [step for p in progress for step, _ in p["losses"]]
    assert steps_seen == list(range(1, 13)), "every step's loss reaches the chart, in order"
    samples = [e["data"] for e in events if e["kind"] == "sample"]
    assert samples and samples[0]["prompt"] == "a photo of zxq"
    client.force_login(alice)
    assert fetch(client, samples[0]["url"])[:4] == b"\x89PNG"
    weights = load_safetensors(fetch(client, reverse("trainer:job_download", args=[job.pk, "lora"])))
    assert weights and all(".lora_A." in k or ".lora_B." in k for k in weights)


def test_cancel_stops_within_a_step_and_resume_goes_on(start_worker, alice, make_dataset):
    start_worker("gpu")
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=2), preset="fast", base_model="tiny",
                          overrides={"steps": 2000, "sample_every": 0})
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).step >= 3, timeout=180, message="training never started")
    jobs.job_cancel(job=job)
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).state == JobState.CANCELED, timeout=30,
             message="cancel did not stop the job")
    job.refresh_from_db()
    assert 3 <= job.checkpoint_step <= job.step < 2000
    stopped_at = job.checkpoint_step
    jobs.job_resume(job=job)
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).step > stopped_at + 2, timeout=120, message="resume did not train")
    events = watch(alice, job, lambda ev: any(e["kind"] == "progress" and e["data"]["step"] > stopped_at + 2 for e in ev))
    resumed = [s for e in events if e["kind"] == "progress" for s, _ in e["data"]["losses"] if s > stopped_at]
    assert resumed[0] == stopped_at + 1, "the step count continues from the checkpoint"
    jobs.job_cancel(job=job)
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).state == JobState.CANCELED, timeout=30)


def test_killed_worker_is_detected_and_the_next_resumes_from_the_checkpoint(start_worker, alice, make_dataset, settings,
                                                                           tmp_path):
    first = start_worker("gpu")
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=2), preset="fast", base_model="tiny",
                          overrides={"steps": 40, "sample_every": 5})
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).checkpoint_step >= 5, timeout=180,
             message="no checkpoint was written:\n" + first.output()[-2000:])
    first.kill9()
    job.refresh_from_db()
    assert job.state == JobState.TRAINING  # nobody has noticed yet
    killed_at = job.checkpoint_step
    # The next worker stands for another GPU machine: its WORK_DIR is empty, so the checkpoint
    # must come from storage (S3 in the scaled-out run).
    settings.WORK_DIR = tmp_path / "second-gpu-machine"
    start_worker("gpu")
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).state == JobState.SUCCEEDED, timeout=240,
             message="the job was not resumed to the end")
    events = watch(alice, job, final_state)
    logs = " ".join(e["data"].get("message", "") for e in events if e["kind"] == "state")
    assert f"resuming from step {killed_at}" in logs
    attempts = [e["data"]["state"] for e in events if e["kind"] == "state"]
    assert attempts.count("starting") == 2
    # After the restart the first step trained is the one after the checkpoint, not step 1.
    after_restart = events[[i for i, e in enumerate(events) if e["kind"] == "state" and e["data"]["state"] == "starting"][1]:]
    first_step = next(s for e in after_restart if e["kind"] == "progress" for s, _ in e["data"]["losses"])
    assert first_step == killed_at + 1
    job.refresh_from_db()
    # two runs, but the second made progress (new checkpoints): the crash count started over
    assert job.step == 40 and job.attempts == 1 and job.lora_file
