"""In Chromium: prompt with a tiny LoRA, watch progress live, see the image, repeat the seed, same image;
and a generation waiting behind a training says so, with an estimate that stays live."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.utils import timezone

from tests.browser.conftest import LiveStudio, screenshot, sign_up, wait_for_js
from tests.gallery.conftest import make_lora
from tests.conftest import make_image_bytes
from trainer.models import JobState, TrainingJob, TrainingSample

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def finished_training(username: str, tmp_path) -> TrainingJob:
    """A succeeded tiny training with a real LoRA file (made with peft; no training run needed)."""
    path = make_lora(tmp_path / "lora" / "lora.safetensors", seed=5)
    job = TrainingJob.objects.create(
        owner=get_user_model().objects.get(username=username), name="Zqx tiny", state=JobState.SUCCEEDED,
        base_model="tiny", trigger_word="zqx", config={"seed": 1}, total_steps=4, step=4,
    )
    job.lora_file.save("lora.safetensors", ContentFile(path.read_bytes()), save=True)
    return job


def signed_in_page(chromium, live: LiveStudio, username: str, viewport: dict | None = None):
    """A page in a new browser context of `live`, signed up as `username` (1280×900 unless told)."""
    context = chromium.new_context(base_url=live.url, viewport=viewport or {"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    sign_up(page, username)
    return page


def add_sample(job: TrainingJob) -> TrainingSample:
    """A training sample image, which publishing makes the model's first example."""
    sample = TrainingSample(job=job, step=4, prompt="a photo of zqx")
    sample.image.save("s.png", ContentFile(make_image_bytes(64, 64)), save=True)
    return sample


def generate_and_wait(page) -> tuple[str, bytes]:
    page.click("#generate-button")
    page.wait_for_url(re.compile(r".*/generate/\d+/$"))
    page.wait_for_selector("#gen-images img", timeout=120_000)
    wait_for_js(page, "document.getElementById('result').dataset.state === 'succeeded'", timeout=60_000)
    src = page.get_attribute("#gen-images img", "src")
    return page.locator("#gen-seed").text_content(), page.request.get(src).body()


def test_generate_with_a_lora_and_repeat_the_seed(page, studio, tmp_path):
    sign_up(page, "gina")
    job = finished_training("gina", tmp_path)
    page.goto(f"/generate/?training={job.pk}")
    assert page.input_value("select[name=lora]") == f"training:{job.pk}"
    assert page.input_value("#id_prompt") == "a photo of zqx"
    assert page.locator("#trigger-hints .chip").text_content() == "✓ zqx"
    page.fill("#id_prompt", "a red circle")
    page.click("#trigger-hints .chip")  # offers the trigger word; a click adds it
    assert page.input_value("#id_prompt") == "a red circle, zqx"
    page.fill("#id_steps", "3")
    page.select_option("#id_seed_mode", "random")
    seen_progress = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: seen_progress.append(frame) if '"progress"' in str(frame) else None))
    seed, first = generate_and_wait(page)
    assert seed.isdigit() and first[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen_progress, "step progress should stream over the WebSocket"
    assert page.get_attribute("#gen-progress", "value") == page.get_attribute("#gen-progress", "max")
    screenshot(page, "generate-01-first")

    # The result page keeps the settings, Seed: Random too: generating again makes a new picture ...
    assert page.input_value("#id_seed_mode") == "random" and page.input_value("#id_seed") == ""
    seed_new, other = generate_and_wait(page)
    assert seed_new != seed and other != first
    # ... and typing the seed shown fixes it: the first picture again.
    page.fill("#id_seed", seed)
    assert page.input_value("#id_seed_mode") == "fixed"
    seed_again, second = generate_and_wait(page)
    assert seed_again == seed and second == first
    screenshot(page, "generate-02-same-seed")
    page.goto("/generate/history/")
    assert page.locator("table.history tbody tr").count() == 3


@pytest.fixture
def studio_without_worker(transactional_db, tmp_path):
    """The web server only: a generation stays queued, as behind a long training on one GPU."""
    live = LiveStudio(tmp_path).start(worker=False)
    yield live
    live.stop()


def test_waiting_behind_a_training_says_so_and_stays_live(chromium, studio_without_worker, django_user_model):
    page = signed_in_page(chromium, studio_without_worker, "wendy")
    other = django_user_model.objects.create_user("trainer-user", password="x" * 12)
    running = TrainingJob.objects.create(owner=other, name="long run", state=JobState.TRAINING, base_model="tiny",
                                         trigger_word="zqx", config={"seed": 1}, total_steps=500, step=100, it_per_s=2.0, eta_seconds=50.0,
                                         started_at=timezone.now())
    page.goto("/generate/")
    page.fill("#id_prompt", "a red circle")
    page.click("#generate-button")
    page.wait_for_url(re.compile(r".*/generate/\d+/$"))
    queue = page.locator("#gen-queue")
    queue.filter(has_text="The GPU is busy with a training (step 100/500, about").wait_for()
    text = queue.text_content()
    assert "generations run as soon as it finishes" in text and "Expected to start in about" in text, text
    assert "No GPU worker is running right now." in text
    screenshot(page, "generate-03-waiting-for-training")

    # The estimate counts down between updates ...
    first_left = int(re.search(r"about (\d+) s left", text).group(1))
    wait_for_js(page, 
        "n => { const m = /about (\\d+) s left/.exec(document.getElementById('gen-queue').textContent);"
        " return m && Number(m[1]) < n; }", arg=first_left)
    # ... and follows the training's progress as the worker records it.
    TrainingJob.objects.filter(pk=running.pk).update(step=450, eta_seconds=25.0)
    queue.filter(has_text="step 450/500").wait_for()
    page.click("#cancel-form button")
    wait_for_js(page, "document.getElementById('result').dataset.state === 'canceled'")
    assert queue.is_hidden()
    page.context.close()


def test_a_requeued_generation_drops_the_images_it_will_make_again(chromium, studio_without_worker):
    """A studio stop sends a running generation back to the queue and deletes its images: the open
    page clears them live, and a reload's replay does not bring them back."""
    from flux_studio import events
    from gallery import services
    from gallery.models import Generation, GenerationState

    page = signed_in_page(chromium, studio_without_worker, "rosa")
    page.goto("/generate/")
    page.fill("#id_prompt", "a red circle")
    page.click("#generate-button")
    page.wait_for_url(re.compile(r".*/generate/\d+/$"))
    g = Generation.objects.get()
    Generation.objects.filter(pk=g.pk).update(state=GenerationState.RUNNING)
    g.refresh_from_db()
    services.publish_state(g)
    events.publish(g.topic, "image", {"id": 999, "index": 0, "seed": 5, "url": "/static/img/favicon.svg",
                                      "download_url": "/static/img/favicon.svg"})
    page.wait_for_selector("#gen-images figure")
    Generation.objects.filter(pk=g.pk).update(state=GenerationState.QUEUED)
    g.refresh_from_db()
    services.publish_state(g, "The studio stopped while generating.", images_dropped=True)
    wait_for_js(page, "document.getElementById('result').dataset.state === 'queued'")
    assert page.locator("#gen-images figure").count() == 0
    page.reload()
    wait_for_js(page, "document.getElementById('result').dataset.state === 'queued'")
    page.wait_for_timeout(500)  # the replay has run
    assert page.locator("#gen-images figure").count() == 0
    page.context.close()
