"""A GPU worker's disk does not fill up with the folders of jobs it trained.

Each run works in WORK_DIR/jobs/<pk> (a copy of the dataset, the engine's output, checkpoints).
What a person keeps is in storage: the LoRA files, the samples, the photos, and the latest
checkpoint a resume fetches. So a job that succeeds leaves no folder; one that fails or is
canceled leaves none either once its checkpoint is stored (a resume, here or on another machine,
fetches it), and keeps it while this machine holds the only copy. A worker that starts removes
what earlier runs left, and never touches the folder of a job that is queued or running.
"""

from __future__ import annotations

import logging
import os
import socket

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone

from flux_studio import worker
from flux_studio.models import Event, WorkerHeartbeat
from trainer import checkpoint_store, job_hooks, jobs, work_dirs
from trainer.job_hooks import JobHooks
from trainer.models import Dataset, JobState, TrainingJob
from trainer.training_run import run_training
from trainer.work_dirs import job_work_dir

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _no_queue(monkeypatch):
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)


def jobs_root():
    from django.conf import settings

    return settings.WORK_DIR / "jobs"


def leftovers() -> list[str]:
    root = jobs_root()
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def steps_after(job, event_id: int) -> list[int]:
    return [s for e in Event.objects.filter(topic=job.topic, kind="progress", id__gt=event_id) for s, _ in e.data["losses"]]


def log_lines(job, event_id: int = 0) -> list[str]:
    return [e.data.get("line", "") for e in Event.objects.filter(topic=job.topic, kind="log", id__gt=event_id)]


def cancel_at_step(monkeypatch, step: int) -> None:
    progress = JobHooks.on_progress

    def on_progress(self, p):
        progress(self, p)
        if p.step == step:
            jobs.job_cancel(job=self.job)

    monkeypatch.setattr(job_hooks, "STOP_POLL_S", 0.0)  # the cancel is read at the next step
    monkeypatch.setattr(JobHooks, "on_progress", on_progress)


def crash_at_step(monkeypatch, step: int) -> None:
    from trainer.engine import training

    real_loss_of, calls = training.loss_of, []

    def loss_of(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise ValueError("a bug in the loss")
        return real_loss_of(*args, **kwargs)

    monkeypatch.setattr(training, "loss_of", loss_of)


@pytest.mark.slow
def test_a_finished_job_leaves_no_work_folder_and_its_lora_still_downloads(alice, alice_client, make_dataset):
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny",
                          overrides={"steps": 4, "sample_every": 2}, sample_prompts=[])  # a checkpoint at step 2
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    assert not job_work_dir(job).exists() and leftovers() == [], leftovers()
    response = alice_client.get(reverse("trainer:job_download", args=[job.pk, "lora"]))
    assert response.status_code == 200
    with default_storage.open(job.lora_file.name, "rb") as fh:
        assert b"".join(response.streaming_content) == fh.read() != b""
    assert checkpoint_store._stored_steps(job) == [], "a finished job's checkpoints are removed"


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["canceled", "crashed"])
def test_a_stopped_job_drops_its_folder_and_resumes_from_the_stored_checkpoint(alice, make_dataset, monkeypatch,
                                                                               ending):
    dataset = make_dataset(alice, n=1)
    job = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny",
                          overrides={"steps": 6, "sample_every": 2}, sample_prompts=[])  # checkpoints every 2 steps
    with monkeypatch.context() as m:
        if ending == "canceled":
            cancel_at_step(m, 3)  # the engine writes a checkpoint where it stops
        else:
            crash_at_step(m, 3)
        run_training(job.pk)
    job.refresh_from_db()
    stopped_at = 3 if ending == "canceled" else 2
    if ending == "canceled":
        assert job.state == JobState.CANCELED, (job.state, job.error)
    else:  # says why, and keeps what the person made
        assert job.state == JobState.FAILED and "a bug in the loss" in job.error and "kept" in job.error_hint
        assert Dataset.objects.filter(pk=dataset.pk).exists() and dataset.photos.count() == 1
        assert all(default_storage.exists(row["image"]) for row in job.snapshot)
    assert job.checkpoint_step == stopped_at
    assert default_storage.listdir(checkpoint_store.job_prefix(job))[0] == [f"step-{stopped_at:06d}"]
    assert leftovers() == [], "the stored checkpoint is all a resume needs"

    before = Event.objects.filter(topic=job.topic).latest("id").id
    jobs.job_resume(job=job)
    run_training(job.pk)  # on the same machine: the checkpoint comes back from storage
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    assert steps_after(job, before) == list(range(stopped_at + 1, 7))
    assert f"Fetched the checkpoint of step {stopped_at} from storage." in log_lines(job, before)
    assert leftovers() == []


@pytest.mark.slow
def test_a_checkpoint_only_this_machine_has_keeps_the_folder_for_the_resume(alice, make_dataset, monkeypatch):
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny",
                          overrides={"steps": 6, "sample_every": 2}, sample_prompts=[])
    storage_class = default_storage.__class__
    real_save = storage_class.save

    def no_checkpoints(self, name, content, *args, **kwargs):
        if "/checkpoints/" in name:
            raise OSError("storage is full")
        return real_save(self, name, content, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(storage_class, "save", no_checkpoints)
        cancel_at_step(m, 3)
        run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.CANCELED and job.checkpoint_step == 0
    assert (job_work_dir(job) / "out" / "checkpoints" / "step-000003").is_dir()
    start_gpu_worker_hooks()  # a worker starting on this machine leaves it too
    assert leftovers() == [str(job.pk)], "the only copy stays"

    before = Event.objects.filter(topic=job.topic).latest("id").id
    jobs.job_resume(job=job)
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    assert steps_after(job, before) == [4, 5, 6], "nothing trained before the cancel was lost"
    assert leftovers() == []


def make_folder(name: str, checkpoint_step: int = 0) -> None:
    """A work folder as a run leaves it: the dataset copy, and a checkpoint when asked."""
    folder = jobs_root() / name
    (folder / "dataset").mkdir(parents=True)
    (folder / "dataset" / "0000.png").write_bytes(b"png")
    if checkpoint_step:
        checkpoint = folder / "out" / "checkpoints" / checkpoint_store.step_name(checkpoint_step)
        checkpoint.mkdir(parents=True)
        (checkpoint / "state.pt").write_bytes(b"state")


def store_checkpoint(job: TrainingJob, step: int) -> None:
    default_storage.save(f"{checkpoint_store.job_prefix(job)}/{checkpoint_store.step_name(step)}/state.pt",
                         ContentFile(b"state"))
    TrainingJob.objects.filter(pk=job.pk).update(checkpoint_step=step)


def test_a_starting_worker_sweeps_finished_and_orphaned_folders_and_leaves_active_ones(alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    made = {}
    for name, state in [("succeeded", JobState.SUCCEEDED), ("failed", JobState.FAILED),
                        ("canceled_unstored", JobState.CANCELED), ("training", JobState.TRAINING),
                        ("queued", JobState.QUEUED)]:
        job = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny", name=name)
        TrainingJob.objects.filter(pk=job.pk).update(state=state)
        made[name] = job
    # The training one is held by another worker process on this machine, alive and beating.
    other = f"{socket.gethostname()}:{os.getppid()}:gpu:other"
    WorkerHeartbeat.objects.create(worker_id=other, hostname=socket.gethostname(), pid=os.getppid(), queue="gpu",
                                   last_seen=timezone.now())
    TrainingJob.objects.filter(pk=made["training"].pk).update(worker_id=other)
    store_checkpoint(made["failed"], 4)
    store_checkpoint(made["canceled_unstored"], 2)  # its copy of step 4 never reached storage
    make_folder(str(made["succeeded"].pk), 4)
    make_folder(str(made["failed"].pk), 4)
    make_folder(str(made["canceled_unstored"].pk), 4)
    make_folder(str(made["training"].pk), 4)
    make_folder(str(made["queued"].pk), 4)  # re-queued by a worker that shut down: resumes from it
    make_folder("999999", 2)  # its job was deleted
    make_folder(".removing-7-0123abcd")  # a worker was killed while removing it
    make_folder("not-a-job")

    start_gpu_worker_hooks()  # what `run_worker --queue gpu` does before taking tasks

    assert leftovers() == sorted([str(made["canceled_unstored"].pk), str(made["training"].pk),
                                  str(made["queued"].pk), "not-a-job"])
    assert (job_work_dir(made["training"]) / "out" / "checkpoints" / "step-000004" / "state.pt").is_file()
    assert TrainingJob.objects.get(pk=made["training"].pk).state == JobState.TRAINING


def test_a_removal_that_fails_is_logged_and_the_next_start_retries(alice, make_dataset, monkeypatch, caplog):
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny")
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
    make_folder(str(job.pk), 4)

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger="trainer.worker"):
        m.setattr(work_dirs.shutil, "rmtree", refuse)
        work_dirs.remove_job_work_dir(job)  # no exception: the job's ending is already recorded
    assert "Permission denied" in caplog.text
    assert not job_work_dir(job).exists() and len(leftovers()) == 1, leftovers()

    work_dirs.sweep_work_dirs()
    assert leftovers() == []


def test_a_running_gpu_worker_sweeps_a_deleted_trainings_folder_within_ten_minutes(alice, make_dataset):
    """The photo copies and checkpoints of a training deleted while its folder was kept (e.g. a
    failed checkpoint upload) do not wait for a worker restart to leave the GPU machine."""
    from flux_studio.management.commands.run_worker import import_task_modules

    import_task_modules()
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny")
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.FAILED)
    clock = worker.HousekeepingClock(now=0.0)  # the worker started (and swept) at 0
    make_folder(str(job.pk), 4)  # only this machine has its checkpoint: kept while the job exists
    clock.run_due(600.0)
    assert leftovers() == [str(job.pk)]
    jobs.job_delete(job=job)
    clock.run_due(1199.0)
    assert leftovers() == [str(job.pk)]  # not yet due
    clock.run_due(1200.0)
    assert leftovers() == []


def start_gpu_worker_hooks() -> None:
    """What `run_worker --queue gpu` does before taking tasks: load the task modules, run their start hooks."""
    from flux_studio.management.commands.run_worker import import_task_modules

    import_task_modules()
    worker.run_start_hooks()
