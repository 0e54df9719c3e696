"""In Chromium, without a worker: the test plays the worker's part by writing the job's row and
events, so each moment a person sees (a base changed, a run ending live, a reload) is exact.
The launch figures follow the chosen base; samples show once each; a run that ends live shows
what a reload would, with no stale speed and an elapsed time on the server's clock."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import pytest
from django.urls import reverse
from django.utils import timezone

from flux_studio import events
from tests.browser.conftest import LiveStudio, wait_for_js
from tests.browser.test_training_page import log_in
from trainer import jobs
from trainer.models import JobState, TrainingJob

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def studio(transactional_db, tmp_path: Path) -> Iterator[LiveStudio]:
    """The web server alone: nothing but this test moves the jobs."""
    live = LiveStudio(tmp_path).start(worker=False)
    yield live
    live.stop()


@pytest.fixture
def training(alice, make_dataset, monkeypatch):
    """A tiny job, running for 30 s by the server's clock, that no queue will pick up."""
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny")
    started = timezone.now() - timedelta(seconds=30)
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.TRAINING, started_at=started, run_started_at=started)
    job.refresh_from_db()
    jobs.publish_state(job)
    return job


def end(job: TrainingJob, state: str, message: str) -> None:
    """What the worker does when a run stops: the row, then the event."""
    TrainingJob.objects.filter(pk=job.pk).update(state=state, finished_at=timezone.now())
    job.refresh_from_db()
    jobs.publish_state(job, message)


def progress(job: TrainingJob, step: int) -> None:
    events.publish(job.topic, "progress", {"step": step, "total": job.total_steps, "loss": 0.25, "lr": 1e-3,
                                           "it_per_s": 44.46, "eta_s": 61.0, "losses": [[step, 0.25]]})


def seconds(text: str) -> int:
    minutes = re.search(r"(\d+)m", text)
    return (int(minutes.group(1)) * 60 if minutes else 0) + int(re.search(r"(\d+)s", text).group(1))


def test_the_preset_figures_follow_the_chosen_base_and_are_what_runs(page, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    log_in(page, "alice", "correct horse battery")
    page.goto(f"/trainings/launch/{dataset.pk}/")
    page.select_option("#base_model", "flux-dev")
    assert page.text_content("#preset-fast-figures").startswith("500 steps · rank 8 · lr 0.001 · 1024 px · about")
    assert "1,000 steps at rank 16" in page.text_content("#preset-balanced-explanation")
    page.select_option("#base_model", "tiny")
    assert page.text_content("#preset-fast-figures").startswith("30 steps · rank 8 · lr 0.001 · 64 px · about")
    assert "60 steps at rank 16" in page.text_content("#preset-balanced-explanation")

    page.check("input[name=preset][value=fast]")
    page.click("#launch")
    page.wait_for_url("**/trainings/*/")
    job = TrainingJob.objects.get()
    assert (job.base_model, job.total_steps, job.config["resolution"]) == ("tiny", 30, 64)


def test_each_sample_shows_once_when_the_page_opens(page, alice, training):
    from django.core.files.base import ContentFile

    from tests.conftest import make_image_bytes
    from trainer.models import TrainingSample

    for step in range(5, 35, 5):  # six samples, each also an event the page replays
        sample = TrainingSample(job=training, step=step, prompt=f"zxq at step {step}")
        sample.image.save("sample.png", ContentFile(make_image_bytes(32, 32)), save=True)
        events.publish(training.topic, "sample", {"step": step, "prompt": sample.prompt, "id": sample.pk,
                                                  "url": reverse("trainer:job_sample", args=[training.pk, sample.pk])})
    events.publish(training.topic, "log", {"line": "all replayed"})
    log_in(page, "alice", "correct horse battery")
    page.goto(training.get_absolute_url())
    wait_for_js(page, "document.getElementById('log').textContent.includes('all replayed')")
    assert page.locator("#samples figure").count() == 6


def test_a_run_that_succeeds_live_shows_delete_clears_its_speed_and_counts_on_the_servers_clock(page, training):
    page.clock.set_system_time(time.time() + 5)  # this computer's clock runs 5 s ahead of the server's
    log_in(page, "alice", "correct horse battery")
    page.goto(training.get_absolute_url())
    page.evaluate("window.stillThisPage = true")
    progress(training, 3)
    wait_for_js(page, "document.getElementById('speed').textContent === '44.46'")
    assert page.text_content("#eta") == "1m 1s"
    assert page.locator("#delete").is_hidden() and page.text_content("#conn") == "● live"
    before = (timezone.now() - training.started_at).total_seconds()
    running = seconds(page.text_content("#elapsed"))
    after = (timezone.now() - training.started_at).total_seconds()
    # The page redraws Elapsed once a second and learns the server's clock from events a moment
    # old: it may be 2 s behind; counted on this computer's clock it would be 5 s ahead.
    assert int(before) - 3 <= running <= after, "counted from the server's start on the server's clock, not 5 s more"

    end(training, JobState.SUCCEEDED, "Training finished.")
    page.wait_for_selector("#job-state[data-state=succeeded]")
    assert page.locator("#delete").is_visible() and page.locator("#download-lora").is_visible()
    assert (page.text_content("#speed"), page.text_content("#eta")) == ("–", "–")
    assert page.text_content("#conn") == "", "a finished training is not live"
    assert seconds(page.text_content("#elapsed")) >= running, "the elapsed time went back when the run ended"
    time.sleep(1.5)
    assert page.evaluate("window.stillThisPage") is True, "a success needs no reload"


def test_a_canceled_run_without_a_checkpoint_offers_run_again_and_no_stale_speed(page, training):
    log_in(page, "alice", "correct horse battery")
    page.goto(training.get_absolute_url())
    progress(training, 3)
    wait_for_js(page, "document.getElementById('speed').textContent === '44.46'")
    with page.expect_navigation():  # the page reloads once to draw the button
        end(training, JobState.CANCELED, "Canceled at step 3; dataset kept.")
    wait_for_js(page, "document.getElementById('log').textContent.includes('Canceled at step 3')")
    assert (page.text_content("#speed"), page.text_content("#eta")) == ("–", "–")
    assert page.text_content("#resume") == "Run again"
    assert page.locator("#delete").is_visible()
    wait_for_js(page, "window.FluxLive !== undefined")
    time.sleep(0.5)  # connected again after the reload: still not "live"
    assert page.text_content("#conn") == ""
