"""In Chromium, without a worker (the test writes the job's row and events, with their times): a
reload of a training with a history (a run, a cancel, a resume the next hour) shows its latest
state at once instead of flipping through the old ones, and counts as elapsed only the time it
ran; a training resumed from elsewhere can be canceled here, and its tab keeps the training's
name; on a phone the job page and the trainings list fit the screen."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from flux_studio import events
from flux_studio.models import Event
from tests.browser.test_training_page import log_in
from tests.browser.test_training_page_live import studio, training  # noqa: F401  (fixtures: no worker; a running job)
from trainer import jobs
from trainer.models import JobState, TrainingJob
from tests.browser.conftest import wait_for_js

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Everything the page shows of the job, each time any of it changes (set before job.js runs).
RECORD_CHANGES = """
window.seen = [];
document.addEventListener("DOMContentLoaded", () => {
  const look = () => window.seen.push({state: document.getElementById("job-state").textContent,
    step: Number(document.getElementById("step").textContent), title: document.title});
  look();
  new MutationObserver(look).observe(document.documentElement, {subtree: true, childList: true, characterData: true});
});
"""


def event_at(job: TrainingJob, at: datetime, kind: str, data: dict) -> None:
    event = events.publish(job.topic, kind, data)
    Event.objects.filter(pk=event.pk).update(created_at=at)


def state_at(job: TrainingJob, at: datetime, state: str, step: int, message: str = "") -> None:
    event_at(job, at, "state", {"state": state, "step": step, "total": job.total_steps, "error": "",
                                "error_hint": "", "message": message})


def progress_at(job: TrainingJob, at: datetime, step: int) -> None:
    event_at(job, at, "progress", {"step": step, "total": job.total_steps, "loss": 0.5 - step / 100, "lr": 1e-3,
                                   "it_per_s": 1.0, "eta_s": 20.0, "losses": [[step, 0.5 - step / 100]]})


@pytest.fixture
def resumed_next_hour(training: TrainingJob) -> TrainingJob:
    """Ran 10 s, canceled at step 5, resumed an hour later from its checkpoint at step 3, ran 10 s
    more (from its claim) and succeeded at step 30: 20 s of training in an hour and 11 s."""
    Event.objects.filter(topic=training.topic).delete()
    start = timezone.now() - timedelta(hours=2)
    state_at(training, start + timedelta(seconds=1), "training", 0)
    for step in range(1, 6):
        progress_at(training, start + timedelta(seconds=1 + step), step)
    state_at(training, start + timedelta(seconds=10), "canceled", 5, "Canceled at step 5; checkpoint kept.")
    resumed = start + timedelta(hours=1)
    state_at(training, resumed, "queued", 5, "Resuming from step 3.")
    state_at(training, resumed + timedelta(seconds=1), "starting", 5)
    state_at(training, resumed + timedelta(seconds=2), "training", 3)
    for step in range(4, 31):
        progress_at(training, resumed + timedelta(seconds=2 + step / 4), step)
    state_at(training, resumed + timedelta(seconds=11), "succeeded", 30, "Training finished.")
    TrainingJob.objects.filter(pk=training.pk).update(  # the row's run time as the claims and the resume kept it
        state=JobState.SUCCEEDED, step=30, checkpoint_step=30, started_at=start, finished_at=resumed + timedelta(seconds=11),
        ran_seconds=10, run_started_at=resumed + timedelta(seconds=1))
    training.refresh_from_db()
    return training


def open_replayed(page, job: TrainingJob) -> None:
    page.add_init_script(RECORD_CHANGES)
    log_in(page, "alice", "correct horse battery")
    page.goto(job.get_absolute_url())
    wait_for_js(page, "document.getElementById('log').textContent.includes('Training finished.')")
    page.wait_for_timeout(500)  # the replay's end follows its last event


def test_a_reload_shows_the_latest_state_without_flipping_through_the_old_ones(page, resumed_next_hour):
    open_replayed(page, resumed_next_hour)
    seen = page.evaluate("window.seen")
    assert {look["state"] for look in seen} == {"Succeeded"}, "the badge went through the job's old states"
    assert {look["step"] for look in seen} == {30}, "the step counter rewound and climbed back"
    assert page.locator("#delete").is_visible() and page.locator("#cancel").is_hidden()
    assert page.locator("#loss-chart .u-over").count() == 1  # the history still drew the chart


def test_elapsed_counts_the_time_it_ran_not_the_hour_it_sat_canceled(page, resumed_next_hour):
    open_replayed(page, resumed_next_hour)
    assert page.text_content("#elapsed") == "20s"
    page.wait_for_timeout(1500)
    assert page.text_content("#elapsed") == "20s", "a finished job's time stands still"


def test_before_any_replay_elapsed_is_the_rows_run_time_not_the_hour_it_sat_canceled(page, resumed_next_hour):
    # No events reach the page: what shows is the server's figure, the API's predict_time.
    page.add_init_script("Object.defineProperty(window, 'FluxLive', {configurable: true, get: () => ({watch() {}}), set() {}});")
    log_in(page, "alice", "correct horse battery")
    page.goto(resumed_next_hour.get_absolute_url())
    assert resumed_next_hour.run_time() == 20
    page.wait_for_timeout(1200)
    assert page.text_content("#elapsed") == "20s"


def test_a_training_resumed_elsewhere_can_be_canceled_here_and_its_tab_keeps_its_name(page, training):
    progress_at(training, timezone.now(), 6)
    TrainingJob.objects.filter(pk=training.pk).update(state=JobState.CANCELED, finished_at=timezone.now(),
                                                      step=6, checkpoint_step=4)
    training.refresh_from_db()
    jobs.publish_state(training, "Canceled at step 6; checkpoint at step 4 kept.")
    log_in(page, "alice", "correct horse battery")
    page.goto(training.get_absolute_url())
    wait_for_js(page, "document.getElementById('log').textContent.includes('Canceled at step 6')")
    assert page.locator("#cancel").is_hidden() and page.text_content("#step") == "6"

    jobs.job_resume(job=training)  # another tab, or the API
    page.wait_for_selector("#job-state[data-state=queued]")
    assert page.text_content("#step") == "4", "the step the next run starts from, its checkpoint's"
    assert page.locator("#cancel").is_visible() and page.locator("#cancel").is_enabled()
    assert page.title() == f"{training.name} · Queued", "the tab lost the training's name"
    with page.expect_navigation():  # canceled at once while queued; the page reloads for its resume button
        page.click("#cancel")
    assert TrainingJob.objects.get(pk=training.pk).state == JobState.CANCELED
    wait_for_js(page, "document.getElementById('log').textContent.includes('Resuming from step 4')")
    page.wait_for_timeout(500)  # the replay's end follows its last event
    assert page.text_content("#step") == "4", "a reload's replay ends on the resume's step, not the old progress"


def test_on_a_phone_the_job_page_and_the_trainings_list_fit_the_screen(chromium, studio, training):  # noqa: F811
    for step in range(1, 6):
        progress_at(training, timezone.now(), step)
    context = chromium.new_context(base_url=studio.url, viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    try:
        log_in(phone, "alice", "correct horse battery")
        phone.goto(training.get_absolute_url())
        wait_for_js(phone, "document.getElementById('step').textContent === '5'")
        chart, card = (phone.eval_on_selector(sel, "e => e.getBoundingClientRect().right")
                       for sel in ("#loss-chart canvas", "#loss-chart"))
        assert chart <= card - 1, "the loss chart sticks out of its card"
        widths = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        assert phone.evaluate(widths) == [390, 390]
        phone.goto(reverse("trainer:job_list"))
        assert phone.evaluate(widths) == [390, 390], "the trainings list is wider than the phone"
        assert phone.locator("td[data-label=Created]").first.is_visible()
    finally:
        context.close()
