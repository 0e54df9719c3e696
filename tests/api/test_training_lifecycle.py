"""After launch: resume a canceled/failed training, continue a finished one, delete trainings and
predictions; each owner-only, with a 409 that says why when the state does not allow it."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile

from flux_studio.api.models import Webhook, WebhookMessage
from gallery import services
from gallery.models import GalleryModel, Generation, GenerationImage
from tests.api.conftest import ApiClient
from tests.conftest import make_image_bytes
from trainer.models import JobState, TrainingJob, TrainingSample

pytestmark = pytest.mark.django_db


def launch(api, dataset, **extra) -> dict:
    response = api.post("/api/v1/trainings", {"input": {"dataset": dataset.pk, "trigger_word": "zxq", "steps": 10}, **extra})
    assert response.status_code == 201, response.content
    return response.json()


def test_resume_a_canceled_training_in_low_memory_mode(alice_api, alice, make_dataset, no_queue):
    training = launch(alice_api, make_dataset(alice, n=1))
    assert alice_api.post(training["urls"]["cancel"]).json()["status"] == "canceled"
    resumed = alice_api.post(f"/api/v1/trainings/{training['id']}/resume", {"memory_mode": "low"})
    assert resumed.status_code == 200, resumed.content
    body = resumed.json()
    assert body["id"] == training["id"] and body["status"] == "starting" and body["input"]["memory_mode"] == "low"
    assert body["completed_at"] is None and body["error"] is None
    assert no_queue == [training["id"], training["id"]], "the same training is queued again"


def test_resume_a_failed_training_keeps_its_memory_mode(alice_api, alice, make_dataset, no_queue):
    training = launch(alice_api, make_dataset(alice, n=1))
    TrainingJob.objects.filter(pk=training["id"]).update(state=JobState.FAILED, error="CUDA out of memory")
    body = alice_api.post(f"/api/v1/trainings/{training['id']}/resume").json()
    assert body["status"] == "starting" and body["input"]["memory_mode"] == "fast" and body["error"] is None


def test_resume_refusals(alice_api, bob_api, alice, make_dataset, finished_job, no_queue):
    done = finished_job(alice)
    refused = alice_api.post(f"/api/v1/trainings/{done.pk}/resume")
    assert refused.status_code == 409 and "canceled or failed" in refused.json()["detail"]
    assert refused.json()["type"].endswith("/conflict")
    running = launch(alice_api, make_dataset(alice, n=1))
    assert alice_api.post(f"/api/v1/trainings/{running['id']}/resume").status_code == 409
    TrainingJob.objects.filter(pk=running["id"]).update(state=JobState.CANCELED)
    bad = alice_api.post(f"/api/v1/trainings/{running['id']}/resume", {"memory_mode": "tiny"})
    assert bad.status_code == 422 and "memory_mode" in bad.json()["errors"]
    assert alice_api.post(f"/api/v1/trainings/{running['id']}/resume", {"steps": 5}).status_code == 422
    assert bob_api.post(f"/api/v1/trainings/{running['id']}/resume").status_code == 404
    assert ApiClient(None).post(f"/api/v1/trainings/{running['id']}/resume").status_code == 401
    assert TrainingJob.objects.get(pk=running["id"]).state == JobState.CANCELED


def test_a_resumed_training_sends_its_webhooks_again(alice_api, alice, make_dataset, no_queue):
    training = launch(alice_api, make_dataset(alice, n=1), webhook="https://example.com/hook")
    hook = Webhook.objects.get(object_id=training["id"])
    Webhook.objects.filter(pk=hook.pk).update(start_sent=True)  # as if the worker had started it
    alice_api.post(training["urls"]["cancel"])
    assert WebhookMessage.objects.filter(webhook=hook, event="completed").count() == 1
    starts = WebhookMessage.objects.filter(webhook=hook, event="start").count()
    alice_api.post(f"/api/v1/trainings/{training['id']}/resume")
    hook.refresh_from_db()
    assert not hook.completed_sent, "the resumed run's end will be delivered too"
    assert WebhookMessage.objects.filter(webhook=hook, event="start").count() == starts + 1


def test_continue_a_finished_training(alice_api, alice, finished_job, no_queue):
    parent = finished_job(alice)
    response = alice_api.post(f"/api/v1/trainings/{parent.pk}/continue", {"steps": 6, "webhook": "https://example.com/h"})
    assert response.status_code == 201, response.content
    child = response.json()
    assert child["id"] != parent.pk and child["parent"] == parent.pk and child["status"] == "starting"
    assert child["input"]["steps"] == 6 and child["input"]["trigger_word"] == "zqx"
    assert no_queue == [child["id"]] and Webhook.objects.filter(object_id=child["id"], kind="training").exists()
    assert alice_api.get(f"/api/v1/trainings/{parent.pk}").json()["parent"] is None


def test_continue_refusals(alice_api, bob_api, alice, make_dataset, finished_job, no_queue):
    parent = finished_job(alice)
    url = f"/api/v1/trainings/{parent.pk}/continue"
    for body, field in (({}, "steps"), ({"steps": 0}, "steps"), ({"steps": "10"}, "steps"), ({"steps": 5, "x": 1}, "body.x"),
                        ({"steps": 5, "webhook": "ftp://x"}, "webhook")):
        response = alice_api.post(url, body)
        assert response.status_code == 422 and field in response.json()["errors"], response.json()
    unfinished = launch(alice_api, make_dataset(alice, n=1))
    refused = alice_api.post(f"/api/v1/trainings/{unfinished['id']}/continue", {"steps": 5})
    assert refused.status_code == 409 and "succeeded" in refused.json()["detail"]
    assert bob_api.post(url, {"steps": 5}).status_code == 404
    assert ApiClient(None).post(url, {"steps": 5}).status_code == 401
    assert not TrainingJob.objects.filter(parent=parent).exists()


def test_delete_a_finished_training_and_its_files(alice_api, bob_api, alice, finished_job, django_capture_on_commit_callbacks):
    job = finished_job(alice)
    stored = [job.lora_file.name, job.kohya_file.name, job.samples.get().image.name]
    storage = job.lora_file.storage
    assert bob_api.delete(f"/api/v1/trainings/{job.pk}").status_code == 404
    assert ApiClient(None).delete(f"/api/v1/trainings/{job.pk}").status_code == 401
    assert all(storage.exists(name) for name in stored)
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.delete(f"/api/v1/trainings/{job.pk}").status_code == 204
    assert not TrainingJob.objects.filter(pk=job.pk).exists() and not TrainingSample.objects.filter(job_id=job.pk).exists()
    assert not any(storage.exists(name) for name in stored)
    assert alice_api.get(f"/api/v1/trainings/{job.pk}").status_code == 404
    assert alice_api.delete(f"/api/v1/trainings/{job.pk}").status_code == 404


def test_delete_refuses_running_published_or_needed_trainings(alice_api, alice, make_dataset, finished_job, no_queue):
    running = launch(alice_api, make_dataset(alice, n=1))
    refused = alice_api.delete(f"/api/v1/trainings/{running['id']}")
    assert refused.status_code == 409 and "cancel it first" in refused.json()["detail"]

    published = finished_job(alice, trigger="pub")
    model = alice_api.post("/api/v1/models", {"training": published.pk}).json()
    refused = alice_api.delete(f"/api/v1/trainings/{published.pk}")
    assert refused.status_code == 409 and "unpublish it first" in refused.json()["detail"]
    alice_api.post("/api/v1/models", {"training": published.pk, "published": False})
    assert alice_api.delete(f"/api/v1/trainings/{published.pk}").status_code == 204
    assert not GalleryModel.objects.filter(pk=model["id"]).exists(), "the private draft goes with it"

    parent = finished_job(alice, trigger="par")
    child = alice_api.post(f"/api/v1/trainings/{parent.pk}/continue", {"steps": 5}).json()
    refused = alice_api.delete(f"/api/v1/trainings/{parent.pk}")
    assert refused.status_code == 409
    assert f"training #{child['id']} continues from this one's weights" in refused.json()["detail"]
    TrainingJob.objects.filter(pk=child["id"]).update(state=JobState.SUCCEEDED)
    assert alice_api.delete(f"/api/v1/trainings/{parent.pk}").status_code == 204
    assert TrainingJob.objects.get(pk=child["id"]).parent_id is None
    assert TrainingJob.objects.filter(pk=running["id"]).exists()


def test_delete_frees_photo_files_only_the_training_kept(alice_api, alice, make_dataset, no_queue,
                                                         django_capture_on_commit_callbacks):
    dataset = make_dataset(alice, n=2)
    kept, gone = list(dataset.photos.order_by("pk"))
    training = launch(alice_api, dataset)
    storage = gone.image.storage
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.delete(f"/api/v1/files/{gone.pk}").status_code == 204
    assert storage.exists(gone.image.name), "the training's snapshot still needs it"
    alice_api.post(training["urls"]["cancel"])
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.delete(f"/api/v1/trainings/{training['id']}").status_code == 204
    assert not storage.exists(gone.image.name)
    assert storage.exists(kept.image.name), "a photo still in its dataset keeps its file"


def test_delete_a_prediction_and_its_images(alice_api, bob_api, alice, monkeypatch):
    monkeypatch.setattr(services, "generation_enqueue", lambda generation: None)
    prediction = alice_api.post("/api/v1/predictions", {"input": {"prompt": "a cat"}}).json()
    image = GenerationImage(generation_id=prediction["id"], index=0, seed=1)
    image.image.save("0.png", ContentFile(make_image_bytes(64, 64)), save=True)
    url = f"/api/v1/predictions/{prediction['id']}"
    assert bob_api.delete(url).status_code == 404
    assert ApiClient(None).delete(url).status_code == 401
    assert alice_api.delete(url).status_code == 204
    assert not Generation.objects.filter(pk=prediction["id"]).exists()
    assert not image.image.storage.exists(image.image.name)
    assert alice_api.get(url).status_code == 404 and alice_api.delete(url).status_code == 404


def test_predict_time_counts_only_the_time_a_resumed_training_ran(alice_api, alice, make_dataset, no_queue, monkeypatch):
    """Ran 60 s, sat canceled an hour, waited an hour, ran 10 s until its worker shut down, waited
    again, ran 20 s: predict_time is 90 s; started_at stays the first start."""
    from datetime import datetime, timedelta
    from datetime import timezone as tz

    from django.utils import timezone

    from trainer import job_queue, jobs

    start = datetime(2026, 1, 5, 9, 0, tzinfo=tz.utc)
    clock = [start]
    monkeypatch.setattr(timezone, "now", lambda: clock[0])

    def at(seconds: int) -> datetime:
        clock[0] = start + timedelta(seconds=seconds)
        return clock[0]

    training = launch(alice_api, make_dataset(alice, n=1))
    rows = TrainingJob.objects.filter(pk=training["id"])
    at(0)
    assert jobs.job_claim(training["id"], "w1") is not None
    rows.update(state=JobState.CANCELED, finished_at=at(60))
    at(3600)
    assert alice_api.post(f"/api/v1/trainings/{training['id']}/resume").status_code == 200
    at(7200)
    assert jobs.job_claim(training["id"], "w1") is not None
    at(7210)  # the worker shuts down: the job goes back to the queue
    rows.update(state=JobState.QUEUED, worker_id="")
    job_queue.mark_enqueued(rows.get())
    at(8000)
    assert jobs.job_claim(training["id"], "w2") is not None
    rows.update(state=JobState.SUCCEEDED, finished_at=at(8020), step=10)
    body = alice_api.get(f"/api/v1/trainings/{training['id']}").json()
    assert body["metrics"]["predict_time"] == 90
    assert body["started_at"].startswith("2026-01-05T09:00:00")
    assert body["completed_at"].startswith("2026-01-05T11:13:40")


def test_predict_time_of_a_training_canceled_while_it_waited_after_its_worker_shut_down(alice_api, alice, make_dataset,
                                                                                        no_queue, monkeypatch):
    """Ran 30 s, went back to the queue when its worker shut down, was canceled there an hour later:
    predict_time is 30 s."""
    from datetime import datetime, timedelta
    from datetime import timezone as tz

    from django.utils import timezone

    from trainer import job_queue, jobs

    start = datetime(2026, 1, 5, 9, 0, tzinfo=tz.utc)
    clock = [start]
    monkeypatch.setattr(timezone, "now", lambda: clock[0])
    training = launch(alice_api, make_dataset(alice, n=1))
    rows = TrainingJob.objects.filter(pk=training["id"])
    assert jobs.job_claim(training["id"], "w1") is not None
    clock[0] = start + timedelta(seconds=30)
    rows.update(state=JobState.QUEUED, worker_id="")
    job_queue.mark_enqueued(rows.get())
    clock[0] = start + timedelta(hours=1)
    assert alice_api.post(training["urls"]["cancel"]).json()["status"] == "canceled"
    assert alice_api.get(f"/api/v1/trainings/{training['id']}").json()["metrics"]["predict_time"] == 30


def test_a_cancel_right_after_a_worker_shutdown_keeps_the_run_time(alice_api, alice, make_dataset, no_queue,
                                                                   monkeypatch):
    """The shutdown sends the job back to the queue and ends its run in the same update: a cancel
    that lands before the job rejoins the queue's order still counts the 30 s it ran."""
    from datetime import datetime, timedelta
    from datetime import timezone as tz

    from django.utils import timezone

    from trainer import jobs, training_run

    start = datetime(2026, 1, 5, 9, 0, tzinfo=tz.utc)
    clock = [start]
    monkeypatch.setattr(timezone, "now", lambda: clock[0])
    monkeypatch.setattr(training_run.job_queue, "mark_enqueued", lambda job: None)  # not reached yet
    training = launch(alice_api, make_dataset(alice, n=1))
    job = jobs.job_claim(training["id"], "w1")
    clock[0] = start + timedelta(seconds=30)
    assert training_run._finish(job, JobState.QUEUED, "Worker shutting down.", worker_id="")
    assert TrainingJob.objects.get(pk=job.pk).run_started_at is None, "waiting is not running"
    clock[0] = start + timedelta(hours=1)
    assert alice_api.post(training["urls"]["cancel"]).json()["status"] == "canceled"
    assert alice_api.get(f"/api/v1/trainings/{training['id']}").json()["metrics"]["predict_time"] == 30
