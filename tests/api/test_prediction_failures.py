"""/predictions when something goes wrong around a prediction: a processing one deleted, a LoRA
it waits to use deleted, the studio stopped (Ctrl-C) while it runs (a real worker, slow)."""

from __future__ import annotations

import signal

import pytest
from django.core.files.base import ContentFile

from flux_studio.api.tokens import token_create
from gallery import generation_run, services
from gallery.models import Generation, GenerationImage, GenerationState
from tests.api.conftest import ApiClient
from tests.conftest import make_image_bytes, wait_for


@pytest.fixture
def no_gpu(monkeypatch) -> list[int]:
    queued: list[int] = []
    monkeypatch.setattr(services, "generation_enqueue", lambda g: queued.append(g.pk))
    return queued


def create(api, **input_):
    response = api.post("/api/v1/predictions", {"input": input_})
    assert response.status_code == 201, response.content
    return Generation.objects.get(pk=response.json()["id"])


def with_image(generation) -> GenerationImage:
    image = GenerationImage(generation=generation, index=0, seed=generation.seed)
    image.image.save("0.png", ContentFile(make_image_bytes(64, 64)), save=False)
    image.thumbnail.save("0.jpg", ContentFile(make_image_bytes(32, 32, fmt="JPEG")), save=False)
    image.save()
    return image


@pytest.mark.django_db
def test_delete_of_a_processing_prediction_is_409_then_204_once_it_stopped(
        alice_api, no_gpu, django_capture_on_commit_callbacks):
    generation = create(alice_api, prompt="a cat")
    image = with_image(generation)
    Generation.objects.filter(pk=generation.pk).update(state=GenerationState.RUNNING)
    url = f"/api/v1/predictions/{generation.pk}"
    refused = alice_api.delete(url)
    assert refused.status_code == 409, refused.content
    problem = refused.json()
    assert problem["status"] == 409 and "still processing" in problem["detail"] and "cancel it first" in problem["detail"]
    generation.refresh_from_db()
    assert generation.state == GenerationState.RUNNING and not generation.cancel_requested, "refused: nothing changed"
    assert alice_api.get(url).json()["status"] == "processing"
    storage, names = image.image.storage, [image.image.name, image.thumbnail.name]
    assert all(storage.exists(name) for name in names)

    assert alice_api.post(f"{url}/cancel").json()["status"] == "processing"  # stops after its current step
    Generation.objects.filter(pk=generation.pk).update(state=GenerationState.CANCELED)  # the worker stopped it
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.delete(url).status_code == 204
    assert alice_api.get(url).status_code == 404
    assert not any(storage.exists(name) for name in names), "its image files go with it"


@pytest.mark.django_db
def test_delete_of_a_waiting_prediction_cancels_and_deletes_it(alice_api, no_gpu):
    generation = create(alice_api, prompt="a cat")
    assert alice_api.delete(f"/api/v1/predictions/{generation.pk}").status_code == 204
    assert not Generation.objects.filter(pk=generation.pk).exists()
    generation_run.run_generation(generation.pk)  # its task, still queued, finds nothing to run


@pytest.mark.django_db
def test_a_deleted_training_fails_the_waiting_prediction_with_a_clear_reason(alice_api, alice, finished_job, no_gpu):
    job = finished_job(alice)
    generation = create(alice_api, prompt="a photo of zqx", loras=[{"training": job.pk, "scale": 0.8}])
    assert alice_api.delete(f"/api/v1/trainings/{job.pk}").status_code == 204
    generation_run.run_generation(generation.pk)  # the worker takes it (it fails before loading a model)
    body = alice_api.get(f"/api/v1/predictions/{generation.pk}").json()
    assert body["status"] == "failed" and "Internal error" not in body["error"], body["error"]
    assert f"training {job.pk}" in body["error"] and "deleted" in body["error"] and "generate again without it" in body["error"]


@pytest.mark.slow
def test_ctrl_c_while_processing_requeues_the_prediction_and_the_next_worker_runs_it(start_worker, alice):
    """The tester's steps: 4 outputs with a LoRA, SIGINT the worker while it processes, start one again."""
    from trainer.engine.tiny import build_tiny_pipeline  # noqa: F401  (torch: skipped without it)
    from tests.gallery.conftest import make_lora
    from trainer.models import JobState, TrainingJob

    api = ApiClient(token_create(owner=alice, name="ctrl-c")[1])
    job = TrainingJob.objects.create(owner=alice, name="circles", state=JobState.SUCCEEDED, base_model="tiny",
                                     trigger_word="zqx", config={}, snapshot=[], total_steps=4, step=4)
    from django.conf import settings

    path = make_lora(settings.WORK_DIR / "made" / "lora.safetensors", seed=1)
    job.lora_file.save("lora.safetensors", ContentFile(path.read_bytes()), save=True)
    response = api.post("/api/v1/predictions", {"input": {
        "prompt": "a red circle", "base_model": "tiny", "steps": 40, "width": 512, "height": 512, "num_outputs": 4,
        "loras": [{"training": job.pk}]}})
    assert response.status_code == 201, response.content
    pk = response.json()["id"]
    gpu = start_worker("gpu")
    wait_for(lambda: Generation.objects.get(pk=pk).step > 0, timeout=240,
             message=f"the prediction never made progress: {gpu.output()[-2000:]}")
    gpu.proc.send_signal(signal.SIGINT)  # Ctrl-C: Huey's graceful stop
    gpu.proc.wait(60)
    generation = Generation.objects.get(pk=pk)
    assert generation.state == GenerationState.QUEUED, (generation.state, generation.error, gpu.output()[-2000:])
    assert api.get(f"/api/v1/predictions/{pk}").json()["status"] == "starting"
    assert "crashed" not in gpu.output() and "Traceback" not in gpu.output()
    again = start_worker("gpu")
    wait_for(lambda: Generation.objects.get(pk=pk).state not in (GenerationState.QUEUED, GenerationState.RUNNING),
             timeout=300, message=f"the requeued prediction never ran: {again.output()[-2000:]}")
    body = api.get(f"/api/v1/predictions/{pk}").json()
    assert body["status"] == "succeeded" and len(body["output"]) == 4, (body, again.output()[-2000:])
    assert body["error"] is None
