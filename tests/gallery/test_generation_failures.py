"""How a generation ends when something else happens while it waits or runs: the studio stops
(Ctrl-C), a LoRA it uses is deleted, the generation itself is deleted. Real tiny pipeline."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.contrib.messages import get_messages
from django.urls import reverse
from PIL import Image

from flux_studio import worker
from flux_studio.models import Event
from gallery import generation_run, services
from gallery.models import GalleryModel, Generation, GenerationImage, GenerationState
from tests.gallery.conftest import PROMPT
from trainer import jobs

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("use_worker_cache")]


@pytest.fixture
def requeued(monkeypatch) -> list[tuple[int, dict]]:
    """The GPU task as the worker would enqueue it again (not run: the worker is stopping)."""
    import gallery.tasks

    calls: list[tuple[int, dict]] = []
    monkeypatch.setattr(gallery.tasks, "generate_images_task", lambda pk, **kw: calls.append((pk, kw)))
    return calls


@pytest.fixture
def shutdown():
    """Clears the worker's shutdown flag whatever the test did (it is process-wide)."""
    yield worker.shutting_down
    worker.shutting_down.clear()


def create(owner, loras, seed=9, num_images=1, steps=3):
    return Generation.objects.create(owner=owner, prompt=PROMPT, base_model="tiny", seed=seed, steps=steps, guidance=3.5,
                                     width=64, height=64, num_images=num_images, loras=loras)


def lora_row(job, scale=1.0):
    return {"kind": "training", "id": job.pk, "scale": scale, "training_id": job.pk, "label": job.name, "trigger_word": "zqx"}


def image_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file() and {"generations", "thumbs"} & set(p.parts)] if root.exists() else []


def stored_pixels(generation, index=0):
    with generation.images.get(index=index).image.open("rb") as fh:
        return np.asarray(Image.open(io.BytesIO(fh.read())).convert("RGB"))


# -- 1. a studio shutdown is not a cancel ---------------------------------------------------------

def test_a_worker_shutdown_puts_the_generation_back_in_the_queue(
        alice, make_job, monkeypatch, requeued, shutdown, django_capture_on_commit_callbacks):
    """Ctrl-C after the first of two images: back in the queue (not "canceled"), the first image's
    copy gone, enqueued again; the next worker makes the same images from the start."""
    g = create(alice, [lora_row(make_job(alice))], num_images=2)
    made: list[np.ndarray] = []
    on_image = generation_run.GenerationProgress.on_image

    def image_then_ctrl_c(self, index, seed, image):
        on_image(self, index, seed, image)
        made.append(np.asarray(image.convert("RGB")))
        shutdown.set()

    monkeypatch.setattr(generation_run.GenerationProgress, "on_image", image_then_ctrl_c)
    with django_capture_on_commit_callbacks(execute=True):
        generation_run.run_generation(g.pk)
    g.refresh_from_db()
    assert len(made) == 1, "stopped before the second image"
    assert g.state == GenerationState.QUEUED and not g.cancel_requested, (g.state, g.error)
    assert g.error == "" and g.step == 0 and g.started_at is None and g.finished_at is None and g.worker_heartbeat is None
    assert not g.images.exists() and image_files() == [], "the stopped run's image is made again, not kept twice"
    assert [pk for pk, _ in requeued] == [g.pk], "enqueued again, to run when a worker starts"
    last = Event.objects.filter(topic=g.topic, kind="state").last().data
    assert last["state"] == "queued" and "studio stopped" in last["message"] and last["error"] == ""
    assert last["images_dropped"] is True, "a page showing the first image clears it"
    assert "Canceled" not in " ".join(e.data.get("message", "") for e in Event.objects.filter(topic=g.topic, kind="state"))

    shutdown.clear()  # the studio starts again: the queued task runs
    monkeypatch.setattr(generation_run.GenerationProgress, "on_image", on_image)
    generation_run.run_generation(g.pk)
    g.refresh_from_db()
    assert g.state == GenerationState.SUCCEEDED and g.images.count() == 2 and len(image_files()) == 4
    assert np.array_equal(stored_pixels(g, 0), made[0]), "the same seed, the same image"


def test_a_cancel_that_meets_a_shutdown_ends_canceled_not_queued(alice, monkeypatch, requeued, shutdown):
    g = create(alice, [], num_images=2)
    on_image = generation_run.GenerationProgress.on_image

    def cancel_then_ctrl_c(self, index, seed, image):
        on_image(self, index, seed, image)
        services.generation_cancel(generation=self.generation)
        shutdown.set()

    monkeypatch.setattr(generation_run.GenerationProgress, "on_image", cancel_then_ctrl_c)
    generation_run.run_generation(g.pk)
    g.refresh_from_db()
    assert g.state == GenerationState.CANCELED and requeued == []
    assert g.images.count() == 1, "a cancel keeps the images already made"


# -- 2. a LoRA deleted while the generation waits -------------------------------------------------

def test_a_training_deleted_while_queued_fails_the_generation_with_a_clear_reason(alice, make_job, caplog):
    kept, deleted = make_job(alice, "one"), make_job(alice, "two")
    g = create(alice, [lora_row(kept), lora_row(deleted, 0.5)])
    jobs.job_delete(job=deleted)
    with caplog.at_level(logging.WARNING, logger="gallery.worker"):
        generation_run.run_generation(g.pk)
    g.refresh_from_db()
    assert g.state == GenerationState.FAILED
    assert "Internal error" not in g.error and "KeyError" not in g.error
    assert f"training {deleted.pk}" in g.error and deleted.name in g.error and "deleted" in g.error
    assert "generate again without it" in g.error and kept.name not in g.error
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a reason, not a crash"
    last = Event.objects.filter(topic=g.topic, kind="state").last().data
    assert last["state"] == "failed" and last["error"] == g.error


def test_a_gallery_model_whose_training_is_gone_fails_the_same_way(alice, bob, make_job):
    job = make_job(bob)
    model = GalleryModel.objects.create(owner=bob, training=job, title="Bob's circles", trigger_word="zqx",
                                        base_model="tiny", published=True)
    g = create(alice, [{**lora_row(job), "kind": "gallery", "id": model.pk, "label": model.title}])
    GalleryModel.objects.filter(pk=model.pk).update(published=False)  # unpublished, then deleted with its training
    jobs.job_delete(job=job)
    generation_run.run_generation(g.pk)
    g.refresh_from_db()
    assert g.state == GenerationState.FAILED and "Internal error" not in g.error
    assert f"gallery model {model.pk}" in g.error and "Bob's circles" in g.error and "deleted" in g.error


def test_another_persons_model_unpublished_while_queued_is_not_used(alice, bob, make_job):
    """Unpublished, a model is its owner's alone again: a generation someone queued with it before
    fails saying so, and its private LoRA is not run."""
    job = make_job(bob)
    model = GalleryModel.objects.create(owner=bob, training=job, title="Bob's circles", trigger_word="zqx",
                                        base_model="tiny", published=True)
    row = {**lora_row(job), "kind": "gallery", "id": model.pk, "label": model.title}
    g, own = create(alice, [row]), create(bob, [row])
    GalleryModel.objects.filter(pk=model.pk).update(published=False)
    generation_run.run_generation(g.pk)
    g.refresh_from_db()
    assert g.state == GenerationState.FAILED and g.images.count() == 0
    assert "Bob's circles" in g.error and "deleted or unpublished since it was queued" in g.error
    generation_run.run_generation(own.pk)  # its owner may still use it
    own.refresh_from_db()
    assert own.state == GenerationState.SUCCEEDED


# -- 3. a generation deleted while it runs ---------------------------------------------------------

def test_the_web_delete_of_a_running_generation_is_refused_like_the_api(alice, alice_client):
    g = create(alice, [])
    Generation.objects.filter(pk=g.pk).update(state=GenerationState.RUNNING)
    response = alice_client.post(reverse("gallery:generation_delete", args=[g.pk]), {"next": reverse("gallery:generate")})
    assert response.status_code == 302 and response["Location"] == reverse("gallery:generation_detail", args=[g.pk])
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert shown and "still running" in shown[0] and "cancel it first" in shown[0]
    g.refresh_from_db()
    assert g.state == GenerationState.RUNNING and not g.cancel_requested, "refused: nothing changed"
    Generation.objects.filter(pk=g.pk).update(state=GenerationState.CANCELED)  # it stopped
    alice_client.post(reverse("gallery:generation_delete", args=[g.pk]))
    assert not Generation.objects.filter(pk=g.pk).exists()


def test_a_queued_generation_is_still_deleted_at_once(alice, alice_client):
    g = create(alice, [])
    alice_client.post(reverse("gallery:generation_delete", args=[g.pk]))
    assert not Generation.objects.filter(pk=g.pk).exists()
    generation_run.run_generation(g.pk)  # its task, still in the queue, finds nothing to do


@pytest.mark.django_db(transaction=True)
def test_a_generation_deleted_under_its_worker_stops_quietly_without_files(alice, monkeypatch, caplog):
    """Deleted by another path while it runs (its owner's account, the admin): the worker stops at
    the image it was storing, removes that image's files, and logs no crash."""
    g = create(alice, [], num_images=2)
    on_image = generation_run.GenerationProgress.on_image

    def deleted_meanwhile(self, index, seed, image):
        Generation.objects.filter(pk=self.generation.pk).delete()
        on_image(self, index, seed, image)

    monkeypatch.setattr(generation_run.GenerationProgress, "on_image", deleted_meanwhile)
    with caplog.at_level(logging.INFO, logger="gallery.worker"):
        generation_run.run_generation(g.pk)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert image_files() == [] and not GenerationImage.objects.exists()
