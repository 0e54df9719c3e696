"""Generations go ahead of waiting trainings on the GPU queue, with a real worker (both shapes)."""

from __future__ import annotations

import pytest

from flux_studio.api.tokens import token_create
from gallery.models import Generation, GenerationState
from tests.api.conftest import ApiClient
from tests.conftest import wait_for
from trainer.models import JobState, TrainingJob

pytestmark = [pytest.mark.slow, pytest.mark.services]


def test_a_generation_queued_after_a_training_runs_first(start_worker, alice, make_dataset):
    api = ApiClient(token_create(owner=alice, name="queue")[1])
    training = api.post("/api/v1/trainings", {"input": {
        "dataset": make_dataset(alice, n=2).pk, "trigger_word": "zxq", "preset": "fast", "base_model": "tiny", "steps": 12}})
    assert training.status_code == 201, training.content
    prediction = api.post("/api/v1/predictions", {"input": {
        "prompt": "a red circle", "base_model": "tiny", "steps": 2, "width": 64, "height": 64}})
    assert prediction.status_code == 201, prediction.content
    # Both wait in the GPU queue, the training first. Only now does a worker start.
    gpu = start_worker("gpu")
    job = TrainingJob.objects.get(pk=training.json()["id"])
    generation = Generation.objects.get(pk=prediction.json()["id"])
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).started_at is not None, timeout=240,
             message=f"the training never started: {gpu.output()[-2000:]}")
    generation.refresh_from_db()
    job.refresh_from_db()
    assert generation.state == GenerationState.SUCCEEDED, (generation.state, generation.error, gpu.output()[-2000:])
    assert generation.finished_at <= job.started_at, "the generation ran before the training that was queued earlier"
    api.post(f"/api/v1/trainings/{job.pk}/cancel")
    wait_for(lambda: TrainingJob.objects.get(pk=job.pk).state in (JobState.CANCELED, JobState.SUCCEEDED), timeout=120)
