"""Waiting trainings and predictions carry `queue`: the position and wait their web pages show."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from gallery.models import Generation, GenerationState
from trainer.models import JobState, TrainingJob

pytestmark = pytest.mark.django_db


def job(owner, state: str, minutes_ago: int = 0) -> TrainingJob:
    return TrainingJob.objects.create(owner=owner, name=f"{owner.username} job", state=state, base_model="tiny",
                                      trigger_word="zqx", config={"preset": "fast"}, total_steps=10,
                                      enqueued_at=timezone.now() - timedelta(minutes=minutes_ago))


def generation(owner, state: str = GenerationState.QUEUED, images: int = 1) -> Generation:
    return Generation.objects.create(owner=owner, prompt="a photo of zqx", base_model="tiny", seed=1, steps=4,
                                     guidance=3.5, width=64, height=64, num_images=images, state=state)


def test_a_waiting_training_shows_its_place_as_its_page_does(alice_api, bob_api, alice, bob):
    job(bob, JobState.TRAINING)
    ahead, mine = job(bob, JobState.QUEUED, minutes_ago=5), job(alice, JobState.QUEUED, minutes_ago=1)
    body = alice_api.get(f"/api/v1/trainings/{mine.pk}").json()
    assert body["status"] == "starting" and body["queue"] == {"position": 2, "running": 1}
    assert [t["queue"] for t in alice_api.get("/api/v1/trainings").json()["results"]] == [{"position": 2, "running": 1}]
    web = Client()
    web.force_login(alice)
    assert "position 2 in the queue" in web.get(mine.get_absolute_url()).content.decode()
    assert bob_api.post(f"/api/v1/trainings/{ahead.pk}/cancel").status_code == 200
    assert alice_api.get(f"/api/v1/trainings/{mine.pk}").json()["queue"] == {"position": 1, "running": 1}
    assert bob_api.get(f"/api/v1/trainings/{mine.pk}").status_code == 404


def test_a_running_or_finished_training_has_no_queue(alice_api, alice, finished_job):
    running = job(alice, JobState.TRAINING)
    assert alice_api.get(f"/api/v1/trainings/{running.pk}").json()["queue"] is None
    assert alice_api.get(f"/api/v1/trainings/{finished_job(alice).pk}").json()["queue"] is None


def test_a_waiting_prediction_shows_the_pages_wait_estimate(alice_api, bob_api, alice, bob):
    generation(bob, GenerationState.RUNNING, images=2)
    generation(bob, images=3)
    mine = generation(alice)
    queue = alice_api.get(f"/api/v1/predictions/{mine.pk}").json()["queue"]
    assert queue["position"] == 2 and queue["ahead"] == 1 and queue["wait_s"] > 0
    web = Client()
    web.force_login(alice)
    page_figures = web.get(f"/generate/{mine.pk}/queue/").json()
    assert queue == {key: value for key, value in page_figures.items() if key != "state"}
    assert alice_api.get("/api/v1/predictions").json()["results"][0]["queue"] == queue
    assert bob_api.get(f"/api/v1/predictions/{mine.pk}").status_code == 404
    alice_api.post(f"/api/v1/predictions/{mine.pk}/cancel")
    assert alice_api.get(f"/api/v1/predictions/{mine.pk}").json()["queue"] is None
