"""A run whose job was handed to another worker writes nothing more to it.

Recovery may think a worker dead (a long database outage stales its heartbeat) and give its job
to another one. The old run must then stop at its next write, leaving the new run's page and the
snapshot the new run trains on alone. (The progress and checkpoint writes are covered in
test_job_runs.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flux_studio.models import Event
from trainer import jobs
from trainer.job_hooks import JobHooks
from trainer.models import CaptionSource, JobState, TrainingJob
from trainer.training_run import run_training

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

NEW_WORKER = "other-host:7:gpu:abc"


@pytest.fixture(autouse=True)
def _no_queue(monkeypatch):
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)


def take_over(job: TrainingJob, **fields) -> int:
    """What recovery and the new worker's claim do to the row; returns the last event id before."""
    TrainingJob.objects.filter(pk=job.pk).update(worker_id=NEW_WORKER, **fields)
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def test_a_run_taken_over_before_its_sample_adds_no_image_to_the_page(alice, make_dataset, monkeypatch, settings):
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny",
                          overrides={"steps": 20, "sample_every": 2}, sample_prompts=["a photo of zxq"])
    progress = JobHooks.on_progress
    taken_at: list[int] = []

    def taken_over_after_step_2(self, p):  # the engine renders step 2's sample right after this report
        progress(self, p)
        if p.step == 2:
            taken_at.append(take_over(self.job))

    monkeypatch.setattr(JobHooks, "on_progress", taken_over_after_step_2)
    run_training(job.pk)
    job.refresh_from_db()
    assert taken_at and job.worker_id == NEW_WORKER and job.state == JobState.TRAINING
    assert not job.samples.exists()
    assert not Event.objects.filter(topic=job.topic, kind="sample").exists()
    # nor a line in the new run's log (the engine logs as it stops)
    assert not Event.objects.filter(topic=job.topic, kind="log", id__gt=taken_at[0]).exists()
    stored = [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file() and "samples" in p.parts]
    assert stored == [], "no sample image is left in storage either"


def test_captioning_that_outlives_its_claim_keeps_the_new_workers_snapshot(alice, make_dataset, monkeypatch, settings,
                                                                           tmp_path):
    import trainer.captions

    settings.CAPTIONER = f"florence2:{tmp_path / 'no-weights-here'}"  # template captions: quick, still real
    dataset = make_dataset(alice, n=2)
    dataset.photos.update(caption="", caption_source=CaptionSource.NONE)
    job = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny", overrides={"steps": 2},
                          autocaption=True)
    theirs = [{**row, "caption": "the new worker's caption"} for row in job.snapshot]
    real_captioning = trainer.captions.run_captioning
    taken_at: list[int] = []

    def captioning_then_taken_over(**kwargs):
        real_captioning(**kwargs)
        taken_at.append(take_over(job, snapshot=theirs))

    monkeypatch.setattr(trainer.captions, "run_captioning", captioning_then_taken_over)
    run_training(job.pk)
    job.refresh_from_db()
    assert taken_at and job.worker_id == NEW_WORKER
    assert job.snapshot == theirs and not job.config.get("autocaptioned")
    after = Event.objects.filter(topic=job.topic, id__gt=taken_at[0])
    assert not after.filter(kind__in=("progress", "state", "checkpoint", "log")).exists(), "the old run stopped there"
