"""Checkpoints reach storage in the background: training never waits for the copy.

A FLUX checkpoint is hundreds of MB; copying it to S3 between two steps would pause the GPU.
Here the storage is made slow (its save waits until the engine is several steps further) or
failing, and the run is watched: steps go on while a copy is in flight, only the newest
checkpoint waiting is copied next, and the run ends with its last checkpoint stored and named.
Runs in the embedded shape and against S3 (marker `services`).
"""

from __future__ import annotations

import threading

import pytest
from django.core.files.storage import default_storage

from flux_studio.models import Event
from trainer import checkpoint_store, job_hooks, jobs
from trainer.job_hooks import JobHooks
from trainer.models import JobState, TrainingJob
from trainer.training_run import run_training

pytestmark = [pytest.mark.django_db, pytest.mark.slow, pytest.mark.services]


@pytest.fixture(autouse=True)
def _no_queue(monkeypatch):
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)


def checkpoint_step_of(name: str) -> int | None:
    """The step of a stored checkpoint file's name, None for any other file."""
    if "/checkpoints/" not in name:
        return None
    return int(name.split("/step-")[1][:6])


def watch_run(monkeypatch, cancel_at: int, on_step=None) -> list[tuple[str, int]]:
    """Record the run's progress reports in order; the person cancels right after `cancel_at`."""
    seen: list[tuple[str, int]] = []
    progress = JobHooks.on_progress

    def on_progress(self, p):
        progress(self, p)
        seen.append(("progress", p.step))
        if on_step is not None:
            on_step(self, p.step)
        if p.step == cancel_at:
            jobs.job_cancel(job=self.job)

    monkeypatch.setattr(job_hooks, "STOP_POLL_S", 0.0)  # the cancel is read at the next step
    monkeypatch.setattr(JobHooks, "on_progress", on_progress)
    return seen


def test_a_slow_storage_does_not_hold_up_training_and_the_last_checkpoint_is_stored(alice, make_dataset,
                                                                                    monkeypatch):
    # A checkpoint every 2 steps (no sample images, so steps stay short).
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny",
                          overrides={"steps": 40, "sample_every": 2}, sample_prompts=[])
    engine_moved_on = threading.Event()
    stored_while_blocked: list[int] = []

    def at_step(hooks, step):  # step 2's copy is still stuck in storage here
        if step == 9:
            stored_while_blocked.append(TrainingJob.objects.get(pk=job.pk).checkpoint_step)
            engine_moved_on.set()

    seen = watch_run(monkeypatch, cancel_at=14, on_step=at_step)
    storage_class, real_save = default_storage.__class__, default_storage.__class__.save

    def slow_save(self, name, content, *args, **kwargs):
        step = checkpoint_step_of(name)
        if step is not None:
            seen.append(("copy", step))
            if step == 2:  # the first checkpoint's copy lasts until the engine is 7 steps further
                engine_moved_on.wait(timeout=30)
        saved = real_save(self, name, content, *args, **kwargs)
        if step is not None:
            seen.append(("copied", step))
        return saved

    monkeypatch.setattr(storage_class, "save", slow_save)
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.CANCELED and job.step == 14, (job.state, job.error)

    first_copy_done = seen.index(("copied", 2))
    assert ("progress", 9) in seen[seen.index(("copy", 2)):first_copy_done], "training went on during the copy"
    assert stored_while_blocked == [0], "a checkpoint is named only once its copy has landed"
    copied = list(dict.fromkeys(step for kind, step in seen if kind == "copy"))
    assert copied == sorted(copied) and 4 not in copied and 6 not in copied, (
        f"checkpoints 4 and 6 were superseded by 8 while 2 was being copied; copied {copied}")
    assert copied[-1] == 14 and job.checkpoint_step == 14, "the run ends with its last checkpoint stored and named"
    assert default_storage.listdir(checkpoint_store.job_prefix(job))[0] == ["step-000014"], "older ones are removed"
    named = [e.data["step"] for e in Event.objects.filter(topic=job.topic, kind="checkpoint")]
    assert named == sorted(named) and named[-1] == 14 and set(named) <= set(copied)


def test_a_failed_copy_is_said_in_the_log_and_the_run_goes_on(alice, make_dataset, monkeypatch):
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny",
                          overrides={"steps": 40, "sample_every": 2}, sample_prompts=[])
    watch_run(monkeypatch, cancel_at=8)
    storage_class, real_save = default_storage.__class__, default_storage.__class__.save

    def save_failing_step_2(self, name, content, *args, **kwargs):
        if checkpoint_step_of(name) == 2:  # the first copy: nothing can supersede it
            raise OSError("storage is full")
        return real_save(self, name, content, *args, **kwargs)

    monkeypatch.setattr(storage_class, "save", save_failing_step_2)
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.CANCELED and job.step == 8, (job.state, job.error)
    lines = [e.data.get("line", "") for e in Event.objects.filter(topic=job.topic, kind="log")]
    assert any("checkpoint of step 2 could not be copied to storage (storage is full)" in line for line in lines), lines
    assert job.checkpoint_step == 8
    assert 2 not in [e.data["step"] for e in Event.objects.filter(topic=job.topic, kind="checkpoint")]
    assert default_storage.listdir(checkpoint_store.job_prefix(job))[0] == ["step-000008"]
