"""The worker's path: a stored generation runs through the cached pipeline and is recorded."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.test import Client
from PIL import Image

from flux_studio.models import Event
from gallery import generation_run
from gallery.models import Generation, GenerationState
from tests.gallery.conftest import PROMPT

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("use_worker_cache")]


def create(owner, loras, seed=9, num_images=1):
    return Generation.objects.create(owner=owner, prompt=PROMPT, base_model="tiny", seed=seed, steps=3, guidance=3.5,
                                     width=64, height=64, num_images=num_images, loras=loras)


def lora_row(job, scale=1.0):
    return {"kind": "training", "id": job.pk, "scale": scale, "training_id": job.pk, "label": job.name, "trigger_word": "zqx"}


def stored_pixels(generation, index=0):
    with generation.images.get(index=index).image.open("rb") as fh:
        return np.asarray(Image.open(io.BytesIO(fh.read())).convert("RGB"))


def test_page_path_equals_plain_diffusers_and_reports_live(alice, make_job, lora_files, worker_cache):
    from trainer.engine.tiny import build_tiny_pipeline

    job = make_job(alice)
    g = create(alice, [lora_row(job)], num_images=2)
    generation_run.run_generation(g.pk)
    g.refresh_from_db()
    assert g.state == GenerationState.SUCCEEDED and g.step == 6 and g.images.count() == 2
    assert [i.seed for i in g.images.all()] == [9, 10]

    plain = build_tiny_pipeline()
    plain.set_progress_bar_config(disable=True)
    plain.load_lora_weights(str(lora_files["one"].parent), weight_name="lora.safetensors")
    expected = plain(PROMPT, height=64, width=64, num_inference_steps=3, guidance_scale=3.5, max_sequence_length=32,
                     generator=torch.Generator().manual_seed(10)).images[0]
    assert np.array_equal(stored_pixels(g, 1), np.asarray(expected))

    kinds = list(Event.objects.filter(topic=g.topic).values_list("kind", flat=True))
    assert kinds[0] == "state" and kinds[-1] == "state" and kinds.count("image") == 2 and "progress" in kinds
    final = Event.objects.filter(topic=g.topic, kind="state").last().data
    assert (final["step"], final["total"], final["steps"]) == (6, 6, 3), "step out of both images' steps"
    image_event = Event.objects.filter(topic=g.topic, kind="image").first()
    assert image_event.data["seed"] == 9 and image_event.data["url"].startswith(f"/generate/{g.pk}/images/")
    from flux_studio.api.tokens import token_create

    token = token_create(owner=alice, name="script")[1]  # the API's event stream carries the same event
    fetched = Client().get(image_event.data["api_url"], headers={"Authorization": f"Bearer {token}"})
    assert fetched.status_code == 200 and b"".join(fetched.streaming_content)[:4] == b"\x89PNG"


def test_second_generation_with_another_lora_keeps_the_base(alice, make_job, worker_cache):
    loads = worker_cache.stats.base_loads
    first = create(alice, [lora_row(make_job(alice, "one"))])
    second = create(alice, [lora_row(make_job(alice, "two"), 0.6)])
    generation_run.run_generation(first.pk)
    generation_run.run_generation(second.pk)
    assert Generation.objects.filter(state=GenerationState.SUCCEEDED).count() == 2
    assert worker_cache.stats.base_loads == max(loads, 1)
    assert not np.array_equal(stored_pixels(first), stored_pixels(Generation.objects.get(pk=second.pk)))


def test_canceled_and_taken_generations_are_skipped(alice):
    g = create(alice, [])
    Generation.objects.filter(pk=g.pk).update(state=GenerationState.CANCELED, cancel_requested=True)
    generation_run.run_generation(g.pk)
    assert not Generation.objects.get(pk=g.pk).images.exists()


def test_a_missing_lora_file_fails_with_a_message(alice, make_job):
    job = make_job(alice)
    job.lora_file.storage.delete(job.lora_file.name)
    g = create(alice, [lora_row(job)])
    generation_run.run_generation(g.pk)
    g.refresh_from_db()
    assert g.state == GenerationState.FAILED and "does not exist" in g.error


def test_use_count_counts_others_successful_generations_only(alice, bob, make_job):
    from gallery.models import GalleryModel

    job = make_job(bob)
    model = GalleryModel.objects.create(owner=bob, training=job, title="Bob's", trigger_word="zqx", base_model="tiny",
                                        published=True)
    row = {**lora_row(job), "kind": "gallery", "id": model.pk}
    for owner in (alice, bob):  # alice's use counts; bob trying his own model does not
        generation_run.run_generation(create(owner, [row]).pk)
    model.refresh_from_db()
    assert model.use_count == 1
    job.lora_file.storage.delete(job.lora_file.name)  # alice's next generation fails
    failed = create(alice, [row])
    generation_run.run_generation(failed.pk)
    assert Generation.objects.get(pk=failed.pk).state == GenerationState.FAILED
    model.refresh_from_db()
    assert model.use_count == 1


@pytest.mark.slow
def test_try_these_settings_of_a_sample_example_remakes_the_sample(alice, alice_client, make_dataset, monkeypatch):
    """A real (tiny) training draws a sample per sample prompt, each with its own seed; the second
    prompt's final sample, made an example, is remade by the generation page from "Try these
    settings" (not with the training's seed, which draws another picture)."""
    import html
    import re
    from urllib.parse import parse_qs, urlsplit

    from django.urls import reverse

    from gallery import services_gallery
    from trainer import jobs
    from trainer.training_run import run_training

    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)
    monkeypatch.setattr("gallery.tasks.generate_images_task", lambda pk: None)
    prompts = ["a photo of zxq", "a photo of zxq on a red mat"]
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=2), preset="fast", base_model="tiny",
                          overrides={"steps": 3, "sample_every": 0}, sample_prompts=prompts)
    run_training(job.pk)
    job.refresh_from_db()
    sample = job.samples.get(prompt=prompts[1])
    model = services_gallery.draft_for_training(owner=alice, job=job)
    model.examples.all().delete()
    services_gallery.example_add_from_sample(model=model, sample=sample)
    page = alice_client.get(model.get_absolute_url()).content.decode()
    query = parse_qs(urlsplit(html.unescape(re.search(r'href="([^"]+)">Try these settings', page).group(1))).query)
    assert query["seed"] == [str(job.config["seed"] + 1)], "the second prompt's own seed"

    def generate(seed: str) -> np.ndarray:
        alice_client.post(reverse("gallery:generate"), {
            "prompt": query["prompt"][0], "base_model": "tiny", "seed_mode": "fixed", "seed": seed,
            "steps": query["steps"][0], "guidance": query["guidance"][0], "size": query["size"][0], "num_images": "1",
            "lora": [f"training:{job.pk}"], "lora_scale": ["1.0"]})
        g = Generation.objects.latest("pk")
        generation_run.run_generation(g.pk)
        return stored_pixels(Generation.objects.get(pk=g.pk)).astype(int)

    with sample.image.open("rb") as fh:
        drawn = np.asarray(Image.open(io.BytesIO(fh.read())).convert("RGB")).astype(int)
    remade = generate(query["seed"][0])
    assert remade.shape == drawn.shape
    other = generate(str(job.config["seed"]))
    assert np.abs(remade - drawn).max() <= 2, "the same picture, to rounding"
    assert np.abs(other - drawn).mean() > 10 * max(np.abs(remade - drawn).mean(), 0.1), "the training's seed draws another"


def _heartbeat(seconds_ago: float) -> int:
    """A worker's heartbeat row on another machine (only its heartbeat tells whether it lives)."""
    from datetime import timedelta

    from django.utils import timezone

    from flux_studio.models import WorkerHeartbeat

    return WorkerHeartbeat.objects.create(worker_id=f"gpu-box-2:4242:gpu:{seconds_ago}", hostname="gpu-box-2", pid=4242,
                                          queue="gpu", last_seen=timezone.now() - timedelta(seconds=seconds_ago)).pk


def test_a_generation_whose_worker_died_is_failed_with_the_reason(alice):
    """Killed mid-generation (out of memory): the page, the queue estimate and the event stream
    would wait for ever. The next worker, or the minute's check, ends it; a live worker's stays."""
    from gallery.models import GenerationState as S

    dead, alive = _heartbeat(3600), _heartbeat(1)
    orphan, busy, inline = create(alice, []), create(alice, []), create(alice, [])
    Generation.objects.filter(pk=orphan.pk).update(state=S.RUNNING, worker_heartbeat=dead)
    Generation.objects.filter(pk=busy.pk).update(state=S.RUNNING, worker_heartbeat=alive)
    Generation.objects.filter(pk=inline.pk).update(state=S.RUNNING)  # no worker known: left alone
    assert generation_run.recover_orphaned_generations() == [orphan.pk]
    orphan.refresh_from_db()
    assert orphan.state == S.FAILED and "worker stopped while generating" in orphan.error and orphan.finished_at
    last = Event.objects.filter(topic=orphan.topic, kind="state").last()
    assert last.data["state"] == "failed", "the page and the API's event stream hear of it"
    assert Generation.objects.get(pk=busy.pk).state == S.RUNNING == Generation.objects.get(pk=inline.pk).state
    assert generation_run.recover_orphaned_generations() == []


def test_the_worker_running_a_generation_is_recorded(alice, monkeypatch):
    from flux_studio import worker

    seen = []
    monkeypatch.setattr(generation_run, "_run_claimed", lambda g: seen.append(Generation.objects.get(pk=g.pk).worker_heartbeat))
    g = create(alice, [])
    worker.register("gpu", "cpu")
    try:
        heartbeat = worker.current_heartbeat()
        generation_run.run_generation(g.pk)
    finally:
        worker.unregister()
    assert seen == [heartbeat] and heartbeat is not None
