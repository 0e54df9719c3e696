"""The training task body, run in this process exactly as the worker runs it, on real models.

A job that cannot train says why, in words a person can act on, and keeps its dataset; continue
training starts from the finished LoRA; the default `demo` base trains; autocaption captions first.
"""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage

from trainer import job_hooks, jobs, training_run
from trainer.models import Dataset, JobState, TrainingJob
from trainer.training_run import run_training

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _record_enqueue(monkeypatch):
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)


def cancel_at_step(monkeypatch, step: int) -> None:
    """The person presses Cancel right after `step`; the run reads the flag at the next step
    (STOP_POLL_S 0), so where it stops does not depend on how fast this machine trains."""
    from trainer.job_hooks import JobHooks

    progress = JobHooks.on_progress

    def on_progress(self, p):
        progress(self, p)
        if p.step == step:
            jobs.job_cancel(job=self.job)

    monkeypatch.setattr(job_hooks, "STOP_POLL_S", 0.0)
    monkeypatch.setattr(JobHooks, "on_progress", on_progress)


def run_stopped_by_ctrl_c(monkeypatch, job, hook: str, when, also=None) -> None:
    """Run `job` with the worker's shutdown flag (Ctrl-C) set from the JobHooks method `hook` once
    `when(argument)` holds, after `also(hooks)` if given (e.g. a cancel arriving at the same moment)."""
    from flux_studio import worker
    from trainer.job_hooks import JobHooks

    original = getattr(JobHooks, hook)

    def wrapped(self, argument):
        original(self, argument)
        if when(argument):
            if also is not None:
                also(self)
            worker.shutting_down.set()

    monkeypatch.setattr(JobHooks, hook, wrapped)
    try:
        run_training(job.pk)
    finally:
        worker.shutting_down.clear()
        monkeypatch.setattr(JobHooks, hook, original)


def test_base_model_that_cannot_load_fails_with_the_reason(alice, make_dataset, settings, tmp_path):
    missing = str(tmp_path / "no-such-flux")
    settings.BASE_MODELS = [*settings.BASE_MODELS, missing]
    dataset = make_dataset(alice, n=2)
    job = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model=missing)
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "no-such-flux" in job.error and "Internal error" not in job.error
    assert Dataset.objects.filter(pk=dataset.pk).exists() and dataset.photos.count() == 2


def test_unreadable_photo_fails_before_training_and_names_the_file(alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    job = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny")
    broken = job.snapshot[1]["image"]
    default_storage.delete(broken)
    default_storage.save(broken, __import__("io").BytesIO(b"this is not a picture"))
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert "0001" in job.error and "Internal error" not in job.error, job.error
    assert job.step == 0
    # Resume is offered for a failed job; the dataset and its captions are untouched.
    assert dataset.photos.filter(caption__contains="zxq").count() == 2


def test_continue_training_starts_from_the_finished_lora(alice, make_dataset):
    from flux_studio.models import Event

    parent = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=2), preset="fast", base_model="tiny",
                             overrides={"steps": 4, "sample_every": 0})
    run_training(parent.pk)
    parent.refresh_from_db()
    assert parent.state == JobState.SUCCEEDED and parent.lora_file
    child = jobs.job_continue(job=parent, extra_steps=3)
    assert child.parent_id == parent.pk and child.total_steps == 3 and child.snapshot == parent.snapshot
    run_training(child.pk)
    child.refresh_from_db()
    assert child.state == JobState.SUCCEEDED and child.step == 3 and child.lora_file
    lines = [e.data.get("line", "") for e in Event.objects.filter(topic=child.topic, kind="log")]
    assert any(line.startswith("continuing from") and "lora.safetensors" in line for line in lines), lines
    # the downloadable config names no folder of the worker, and runs as is with the CLI's flags
    import yaml

    from django.conf import settings
    from trainer.engine import TrainConfig

    text = child.config_file.open("rb").read().decode()
    assert str(settings.WORK_DIR) not in text
    config = yaml.safe_load(text)
    assert (config["images_dir"], config["output_dir"], config["resume"]) == ("dataset", "out", False)
    assert config["init_lora"] == "parent/lora.safetensors" and config["steps"] == 3
    TrainConfig.from_dict(config).resolve()


def test_the_default_demo_base_trains_through_the_studio(alice, make_dataset, settings):
    """The product default on a CPU: the shipped `demo` base, through the same task body."""
    from django.conf import settings as dj_settings

    assert "demo" in dj_settings.BASE_MODELS
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=2), preset="fast", base_model="demo",
                          overrides={"steps": 6, "sample_every": 6}, sample_prompts=["a zxq circle on a blue background"])
    assert job.config["resolution"] == 64
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.step == 6 and job.lora_file and job.samples.count() == 1


def test_autocaption_captions_first_then_trains_on_those_captions(alice, make_dataset, settings, tmp_path):
    """The API's one-request autocaption: a real (tiny, offline) captioner runs inside the task."""
    from trainer.engine.captioning import build_tiny_florence2
    from trainer.models import CaptionSource

    settings.CAPTIONER = f"florence2:{build_tiny_florence2(tmp_path / 'florence')}"
    dataset = make_dataset(alice, n=2)
    dataset.photos.update(caption="", caption_source=CaptionSource.NONE)
    job = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny", overrides={"steps": 2},
                          autocaption=True)
    assert all(row["caption"] == "a photo of zxq" for row in job.snapshot)  # template until captioned
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    photos = list(dataset.photos.order_by("id"))
    assert all(p.caption_source == CaptionSource.AUTO and "zxq" in p.caption for p in photos)
    assert [row["caption"] for row in job.snapshot] == [p.caption for p in photos]
    assert job.config["autocaptioned"] is True


def test_autocaption_without_weights_trains_on_templates_and_says_so(alice, make_dataset, settings, tmp_path):
    from flux_studio.models import Event
    from trainer.models import CaptionSource

    settings.CAPTIONER = f"florence2:{tmp_path / 'no-weights-here'}"
    dataset = make_dataset(alice, n=1)
    dataset.photos.update(caption="", caption_source=CaptionSource.NONE)
    job = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny", overrides={"steps": 2},
                          autocaption=True)
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.snapshot[0]["caption"] == "a photo of zxq"
    lines = " ".join(e.data.get("line", "") for e in Event.objects.filter(topic=job.topic, kind="log"))
    assert "no captioner weights can be loaded here" in lines


def test_cancel_that_meets_a_worker_shutdown_ends_canceled_not_queued(alice, make_dataset, monkeypatch):
    """Ctrl-C on the worker while a cancel is pending: the job is canceled, never re-queued with the flag."""
    import trainer.tasks

    requeued: list[int] = []
    monkeypatch.setattr(trainer.tasks, "train_job_task", lambda pk: requeued.append(pk))
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny",
                          overrides={"steps": 50, "sample_every": 0})
    # both arrive between two steps
    run_stopped_by_ctrl_c(monkeypatch, job, "on_progress", lambda p: p.step == 2,
                          also=lambda hooks: jobs.job_cancel(job=hooks.job))
    job.refresh_from_db()
    assert job.state == JobState.CANCELED, job.state
    assert job.checkpoint_step >= 2 and requeued == []


def test_a_clean_stop_is_no_crash_and_a_new_checkpoint_clears_the_crash_count(alice, make_dataset, monkeypatch):
    """`attempts` fails a job whose worker keeps dying. A studio stopped with Ctrl-C is not such a
    death, and a run that reaches a new checkpoint made progress: the count starts over from it."""
    import trainer.tasks

    requeued: list[int] = []
    monkeypatch.setattr(trainer.tasks, "train_job_task", lambda pk: requeued.append(pk))
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny",
                          overrides={"steps": 12, "sample_every": 4})
    TrainingJob.objects.filter(pk=job.pk).update(attempts=2)  # its worker died twice already
    # Ctrl-C before a first step: no checkpoint either
    run_stopped_by_ctrl_c(monkeypatch, job, "on_log", lambda line: "loading base" in line)
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and requeued == [job.pk] and job.checkpoint_step == 0
    assert job.attempts == 2, "the clean stop is not counted; the two deaths still are"
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.checkpoint_step >= 4
    assert job.attempts == 1, "a new checkpoint: only this run counts now"


def test_photo_files_lost_by_storage_fail_the_job_by_their_names_not_a_server_path(alice, make_dataset, monkeypatch):
    import trainer.tasks

    monkeypatch.setattr(trainer.tasks, "train_job_task", lambda pk: None)
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=3), preset="fast", base_model="tiny",
                          overrides={"steps": 4, "sample_every": 0})
    lost = job.dataset.photos.order_by("pk")[1]
    default_storage.delete(lost.image.name)
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert job.error == "1 of this training's photo files are missing from storage: pet1.png."
    assert "launch a new training" in job.error_hint and lost.image.name not in job.error
    assert Dataset.objects.filter(pk=job.dataset_id).exists(), "the dataset is kept"


def test_a_run_whose_job_was_taken_over_stops_and_leaves_the_job_alone(alice, make_dataset, monkeypatch):
    """Recovery thought this worker dead and another claimed the job: this run must not finish it."""
    from flux_studio.models import Event
    from trainer.models import TrainingJob
    from trainer.job_hooks import JobHooks

    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny",
                          overrides={"steps": 200, "sample_every": 0})
    progress = JobHooks.on_progress
    taken_at: list[int] = []

    def taken_over_at_step_2(self, p):
        if p.step == 2:
            TrainingJob.objects.filter(pk=self.job.pk).update(worker_id="other-host:7:gpu:abc", step=0, checkpoint_step=0)
            taken_at.append(Event.objects.order_by("-id").values_list("id", flat=True).first())
        progress(self, p)

    monkeypatch.setattr(JobHooks, "on_progress", taken_over_at_step_2)
    run_training(job.pk)
    job.refresh_from_db()
    assert job.worker_id == "other-host:7:gpu:abc" and job.state == JobState.TRAINING
    assert job.step == 0 and job.checkpoint_step == 0 and not job.lora_file
    after = Event.objects.filter(topic=job.topic, id__gt=taken_at[0])
    assert not after.filter(kind__in=("progress", "checkpoint", "state")).exists()


def test_out_of_memory_fails_with_advice_keeps_everything_and_resumes_in_low_memory(alice, make_dataset, monkeypatch):
    """CUDA running out of memory mid-run (injected): FAILED with what to do, not a fake success."""
    import torch

    from flux_studio.models import Event
    from trainer.engine import training

    dataset = make_dataset(alice, n=2)
    job = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny",
                          overrides={"steps": 6, "sample_every": 2})
    real_loss_of, calls = training.loss_of, []

    def out_of_memory_from_step_3(*args, **kwargs):  # even with gradient checkpointing, which the run tries first
        calls.append(1)
        if len(calls) >= 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_loss_of(*args, **kwargs)

    monkeypatch.setattr(training, "loss_of", out_of_memory_from_step_3)
    run_training(job.pk)
    job.refresh_from_db()
    lines = [e.data.get("line", "") for e in Event.objects.filter(topic=job.topic, kind="log")]
    assert any("out of memory at step 3: gradient checkpointing is now on" in line for line in lines), lines
    assert job.state == JobState.FAILED and "out of memory" in job.error and "Internal error" not in job.error
    assert "low-memory mode" in job.error_hint and "checkpoints are kept" in job.error_hint
    assert job.checkpoint_step == 2 and dataset.photos.count() == 2

    monkeypatch.setattr(training, "loss_of", real_loss_of)
    failed_at = Event.objects.filter(topic=job.topic).latest("id").id
    jobs.job_resume(job=job, memory_mode="low")
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    after = Event.objects.filter(topic=job.topic, id__gt=failed_at)
    assert any("low memory" in e.data.get("line", "") for e in after.filter(kind="log"))
    steps = [s for e in after.filter(kind="progress") for s, _ in e.data["losses"]]
    assert steps == [3, 4, 5, 6], "the step count goes on from the checkpoint after the failure"


def test_resume_on_a_machine_without_the_checkpoint_fetches_it_from_storage(alice, make_dataset, monkeypatch, settings,
                                                                            tmp_path):
    """Another GPU machine has another WORK_DIR: the step count still goes on from the checkpoint."""
    from django.core.files.storage import default_storage

    from flux_studio.models import Event
    from trainer import checkpoint_store
    from trainer.job_hooks import JobHooks

    # No sample images keep the steps short.
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=2), preset="fast", base_model="tiny",
                          overrides={"steps": 30, "sample_every": 3}, sample_prompts=[])
    progress = JobHooks.on_progress
    cancel_at_step(monkeypatch, 5)
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.CANCELED, job.state
    assert job.checkpoint_step >= 5
    stored, stopped_at = checkpoint_store.job_prefix(job), job.checkpoint_step
    assert default_storage.listdir(stored)[0] == [f"step-{stopped_at:06d}"], "only the latest is kept"

    monkeypatch.setattr(JobHooks, "on_progress", progress)
    settings.WORK_DIR = tmp_path / "second-machine"
    canceled_at = Event.objects.filter(topic=job.topic).latest("id").id
    jobs.job_resume(job=job)
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    after = Event.objects.filter(topic=job.topic, id__gt=canceled_at)
    steps = [s for e in after.filter(kind="progress") for s, _ in e.data["losses"]]
    assert steps[0] == stopped_at + 1 and steps[-1] == 30, steps
    assert any("from storage" in e.data.get("line", "") for e in after.filter(kind="log"))
    assert not default_storage.exists(stored), "a finished job's checkpoints are removed, its folder too"


def test_a_stopped_run_sends_every_loss_it_computed(alice, make_dataset, monkeypatch):
    """Losses held back by the progress rate limit still reach the chart when the run stops."""
    from flux_studio.models import Event

    monkeypatch.setattr(job_hooks, "PROGRESS_EVERY_S", 3600.0)  # only the first report goes out live
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny",
                          overrides={"steps": 40, "sample_every": 0}, sample_prompts=[])
    cancel_at_step(monkeypatch, 4)
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.CANCELED
    steps = [s for e in Event.objects.filter(topic=job.topic, kind="progress") for s, _ in e.data["losses"]]
    assert steps == list(range(1, job.step + 1)) and job.step >= 4, steps


@pytest.mark.parametrize(("compile_", "graphs", "expected"),
                         [(False, False, (False, False)), (True, False, (True, False)), (True, True, (True, True)),
                          (False, True, (False, False))])  # fmt: skip
def test_the_workers_compile_settings_reach_the_engine(alice, make_dataset, settings, tmp_path, compile_, graphs, expected):
    """TRAIN_COMPILE and TRAIN_CUDA_GRAPHS are the worker's choice (not the job's): they go into the
    engine's TrainConfig, CUDA graphs only with compile (the config would refuse them alone)."""
    from trainer.engine import TrainConfig

    settings.TRAIN_COMPILE, settings.TRAIN_CUDA_GRAPHS = compile_, graphs
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny")
    config = TrainConfig.from_dict(training_run.engine_config(job, tmp_path / "work", tmp_path / "images", resume=False))
    assert (config.compile, config.cuda_graphs) == expected
    config.resolve()  # a valid combination


@pytest.mark.parametrize(("memory_mode", "cuda", "expected"), [("fast", True, True), ("low", True, False), ("fast", False, False)])
def test_the_workers_fp8_setting_reaches_fast_mode_jobs_on_a_gpu_only(alice, make_dataset, settings, tmp_path, monkeypatch,
                                                                      memory_mode, cuda, expected):
    """TRAIN_FP8 is the worker's choice too; a low memory job's base is 4-bit, so it trains without
    it, and so does a CPU worker (FP8 there is only the slow check path)."""
    import torch

    from trainer.engine import TrainConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    settings.TRAIN_FP8 = True
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), preset="fast", base_model="tiny",
                          overrides={"memory_mode": memory_mode})  # fmt: skip
    config = TrainConfig.from_dict(training_run.engine_config(job, tmp_path / "work", tmp_path / "images", resume=False))
    assert config.fp8 is expected
    config.resolve()  # a valid combination
