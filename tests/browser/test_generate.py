"""In Chromium: prompt with a tiny LoRA, watch progress live, see the image, repeat the seed, same image."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile

from tests.browser.conftest import screenshot, sign_up
from tests.gallery.conftest import make_lora
from trainer.models import JobState, TrainingJob

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


def generate_and_wait(page) -> tuple[str, bytes]:
    page.click("#generate-button")
    page.wait_for_url(re.compile(r".*/generate/\d+/$"))
    page.wait_for_selector("#gen-images img", timeout=120_000)
    page.wait_for_function("document.getElementById('result').dataset.state === 'succeeded'", timeout=60_000)
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

    # The result page keeps the settings with the seed fixed: generating again remakes the image.
    assert page.input_value("#id_seed_mode") == "fixed" and page.input_value("#id_seed") == seed
    seed_again, second = generate_and_wait(page)
    assert seed_again == seed and second == first
    screenshot(page, "generate-02-same-seed")
    page.goto("/generate/history/")
    assert page.locator("table.history tbody tr").count() == 2
