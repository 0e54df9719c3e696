"""What the job page draws for the person and their screen reader: a cancel that was asked for
says so, the Cancel button waits (hidden) on a finished job for a resume from elsewhere, the
progress, state, chart and log are named, and a continuation names its parent by number."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from trainer import jobs
from trainer.models import JobState, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_real_queue(monkeypatch):
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)


@pytest.fixture
def job(alice, make_dataset) -> TrainingJob:
    return jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")


def page_of(client, job: TrainingJob) -> str:
    return client.get(job.get_absolute_url()).content.decode()


def cancel_button(html: str) -> str:
    return re.search(r'<button[^>]*id="cancel"[^>]*>[^<]*</button>', html).group(0)


def test_a_cancel_asked_for_shows_stopping_until_the_worker_stops(alice_client, job):
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.TRAINING, step=12)
    assert cancel_button(page_of(alice_client, job)).endswith(">Cancel</button>")

    alice_client.post(reverse("trainer:job_cancel", args=[job.pk]))
    page = page_of(alice_client, job)
    button = cancel_button(page)
    assert "disabled" in button and button.endswith(">Stopping…</button>"), "a second click would do nothing new"
    assert re.search(r'id="cancel-note"\s*>Cancel requested: it stops after the current step\.', page)


def test_a_finished_job_keeps_a_hidden_cancel_button_for_a_resume_from_elsewhere(alice_client, job):
    """job.js shows it when another tab or the API resumes the job; a stop asked for in the last
    run does not carry over to the next one."""
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.CANCELED, cancel_requested=True, checkpoint_step=5)
    page = page_of(alice_client, job)
    assert re.search(r'id="cancel-form" hidden', page)
    assert cancel_button(page).endswith(">Cancel</button>") and "disabled" not in cancel_button(page)
    assert re.search(r'id="cancel-note" hidden', page)


def test_the_progress_state_chart_and_log_are_named_for_screen_readers(alice_client, job):
    page = page_of(alice_client, job)
    assert re.search(r'<progress id="progress"[^>]* aria-label="Training progress"', page)
    assert re.search(r'id="job-state"[^>]* role="status"', page), "a state change is announced"
    assert re.search(r'id="loss-chart"[^>]* role="img" aria-label="Loss curve by step"', page)
    log = re.search(r'<div class="log" id="log"[^>]*>', page).group(0)
    assert 'role="log"' in log and 'aria-labelledby="log-title"' in log and 'tabindex="0"' in log
    assert '<h2 id="log-title">Log</h2>' in page


def test_a_continuation_names_its_parent_by_number(alice_client, job):
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
    child = jobs.job_continue(job=job, extra_steps=5)
    assert f'continues <a href="{job.get_absolute_url()}">#{job.pk} · {job.name}</a>' in page_of(alice_client, child)


def test_each_cell_of_the_trainings_list_is_labelled_for_the_phone_layout(alice_client, job):
    page = alice_client.get(reverse("trainer:job_list")).content.decode()
    assert '<table class="list jobs"' in page
    assert re.findall(r'<td data-label="([^"]+)"', page) == ["State", "Progress", "Settings", "Base", "Created"]
