"""Several resolutions from the launch page: "32, 64" is checked, frozen into the job, shown and trained."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from trainer import jobs
from trainer.models import JobState, TrainingJob
from trainer.presets import estimate_seconds, preset_settings

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_real_queue(monkeypatch):
    enqueued: list[int] = []
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: enqueued.append(job.pk))
    return enqueued


def resolution_of(text: object) -> object:
    values = jobs.clean_settings(preset="fast", base_model="tiny", overrides={"resolution": text}, sample_prompts=[])
    return values["resolution"]


def test_one_size_or_several_sorted_without_duplicates():
    assert resolution_of("64") == 64 and resolution_of(64) == 64  # one size stays the plain setting
    assert resolution_of("64, 32,64") == [32, 64] and resolution_of("1024 512") == [512, 1024]
    assert resolution_of([768, 512, 1024]) == [512, 768, 1024]
    assert resolution_of(1024.0) == 1024 and resolution_of([64.0, 32]) == [32, 64]  # JSON's whole floats


@pytest.mark.parametrize("text, message", [
    ("32, 70", "70 must be a multiple of 16"), ("16, 64", "16 must be between 32 and 2048"),
    ("64, big", "'big' is not a whole number"), (64.5, "64.5 is not a whole number"), ([64, True], "True is not a whole number"), ("32, 48, 64, 80, 96", "at most 4 sizes"), (" , ", "give a size"),
])
def test_each_size_is_checked_and_named(text, message):
    with pytest.raises(ValidationError) as info:
        resolution_of(text)
    assert message in " ".join(info.value.message_dict["resolution"])


def test_launch_form_with_two_sizes_creates_the_job_and_its_page_shows_them(alice_client, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    page = alice_client.get(reverse("trainer:job_launch", args=[dataset.pk])).content.decode()
    assert "Resolutions (px, multiples of 16)" in page and "every photo is then trained at each" in page
    response = alice_client.post(reverse("trainer:job_launch", args=[dataset.pk]),
                                 {"preset": "fast", "base_model": "tiny", "resolution": "32, 64"})
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and job.config["resolution"] == [32, 64]
    detail = alice_client.get(job.get_absolute_url()).content.decode()
    assert '<span id="job-resolutions">32, 64 px</span>' in detail


def test_a_refused_size_keeps_what_was_typed(alice_client, alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    page = alice_client.post(reverse("trainer:job_launch", args=[dataset.pk]),
                             {"preset": "fast", "base_model": "tiny", "resolution": "32, 72", "steps": "9"}).content.decode()
    assert "72 must be a multiple of 16" in page and not TrainingJob.objects.exists()
    assert 'value="32, 72"' in page and 'value="9"' in page


def test_the_estimate_counts_each_size():
    """A step trains at one size (the mean cost); every photo is encoded once per size."""
    at = lambda resolution: estimate_seconds({**preset_settings("balanced", "flux-dev"), "resolution": resolution},  # noqa: E731
                                             "flux-dev", photo_count=20)
    assert at(512) < at([512, 1024]) < at(1024)
    few_steps = {**preset_settings("balanced", "flux-dev"), "steps": 1}
    assert estimate_seconds({**few_steps, "resolution": [512, 768, 1024]}, "flux-dev", 20) > \
        estimate_seconds({**few_steps, "resolution": 1024}, "flux-dev", 20) + 30  # 40 more photos to encode


def test_the_estimate_follows_the_measured_step_times_and_the_memory_mode():
    """FLUX.1-dev on an H200: 0.32 s a step at 512², 0.50 at 1024²; low memory 1.9x (README)."""
    settings = {**preset_settings("balanced", "flux-dev"), "steps": 1000}
    encoding = estimate_seconds({**settings, "steps": 0}, "flux-dev", 20)
    assert estimate_seconds({**settings, "resolution": 512}, "flux-dev", 20) - encoding == pytest.approx(320, abs=2)
    assert estimate_seconds({**settings, "resolution": 1024}, "flux-dev", 20) - encoding == pytest.approx(500, abs=2)
    low = estimate_seconds({**settings, "resolution": 1024, "memory_mode": "low"}, "flux-dev", 20)
    assert low - encoding == pytest.approx(950, abs=2)


@pytest.mark.slow
def test_a_job_at_two_sizes_trains_through_the_task(alice, make_dataset, _no_real_queue):
    from flux_studio.models import Event
    from trainer.training_run import run_training

    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=2), preset="fast", base_model="tiny",
                          overrides={"steps": 2, "sample_every": 0, "resolution": "64, 32"})
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    lines = [e.data.get("line", "") for e in Event.objects.filter(topic=job.topic, kind="log")]
    assert any("32 px: 2 examples" in line and "64 px: 2 examples" in line for line in lines), lines
