"""In Chromium: launch a tiny training, watch progress, the loss chart and a sample arrive live,
see the finished state in the tab title, then download the LoRA."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from tests.browser.conftest import screenshot, wait_for_js

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def log_in(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/accounts/login" not in url)


def test_launch_watch_and_download(page, alice, make_dataset, tmp_path):
    dataset = make_dataset(alice, n=3, trigger="zxq")
    log_in(page, "alice", "correct horse battery")
    page.goto(f"/trainings/launch/{dataset.pk}/")
    page.check("input[name=preset][value=fast]")
    page.click("summary")
    page.fill("#steps", "16")
    page.fill("#sample_every", "8")
    page.fill("#sample_prompts", "a photo of zxq on a mat")
    page.click("#launch")
    page.wait_for_url("**/trainings/*/")
    screenshot(page, "06-job-queued")

    # Progress arrives live: the bar moves, the loss chart fills, a sample appears.
    wait_for_js(page, "document.getElementById('progress').value >= 4", timeout=180_000)
    page.wait_for_selector("#samples figure img", timeout=120_000)
    page.wait_for_selector("#job-state[data-state=succeeded]", timeout=120_000)
    assert page.eval_on_selector("#progress", "p => p.value") == 16
    assert page.text_content("#step") == "16"
    assert page.locator("#loss-chart canvas").count() == 1
    points = page.evaluate("document.querySelector('#loss-chart .u-over') !== null")
    assert points
    sample = page.locator("#samples figure img").first
    assert page.evaluate("img => img.complete && img.naturalWidth > 0", sample.element_handle())
    assert "a photo of zxq on a mat" in page.text_content("#samples")
    assert "Succeeded" in page.title()
    assert "checkpoint" in page.text_content("#log") or "step" in page.text_content("#log")
    screenshot(page, "06-job-finished")

    with page.expect_download() as download_info:
        page.click("#download-lora")
    path = tmp_path / "lora.safetensors"
    download_info.value.save_as(path)
    job_pk = page.url.rstrip("/").rsplit("/", 1)[-1]
    assert download_info.value.suggested_filename == f"zxq_{job_pk}_lora.safetensors"
    assert any(".lora_A." in key for key in load_file(path))

    # A reload (or a second tab) replays the whole history: the chart and samples come back.
    page.reload()
    page.wait_for_selector("#samples figure img")
    wait_for_js(page, "document.getElementById('log').textContent.length > 0")
    assert page.text_content("#step") == "16"


def test_cancel_then_resume_keeps_the_page_live_without_reloading(page, alice, make_dataset):
    """A resumed job's history holds its old 'canceled' state: replaying it must not reload the page."""
    from trainer import jobs
    from trainer.models import TrainingJob

    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=2), preset="fast", base_model="tiny",
                          overrides={"steps": 2000, "sample_every": 0})
    log_in(page, "alice", "correct horse battery")
    page.goto(f"/trainings/{job.pk}/")
    wait_for_js(page, "Number(document.getElementById('step').textContent) >= 3", timeout=180_000)
    with page.expect_navigation():
        page.click("#cancel")
    page.wait_for_selector("#resume", timeout=60_000)  # the page reloads once to draw the button
    stopped_at = TrainingJob.objects.get(pk=job.pk).checkpoint_step
    assert page.get_attribute("#job-state", "data-state") == "canceled"

    with page.expect_navigation():
        page.click("#resume")
    page.evaluate("window.stillThisPage = true")
    wait_for_js(page, f"Number(document.getElementById('step').textContent) > {stopped_at + 2}", timeout=120_000)
    assert page.evaluate("window.stillThisPage") is True, "the page reloaded after resume"
    assert page.get_attribute("#job-state", "data-state") == "training"
    assert f"Resuming from step {stopped_at}" in page.text_content("#log")
    assert "Canceled" not in page.title()
    jobs.job_cancel(job=TrainingJob.objects.get(pk=job.pk))
