"""Job creation freezes settings and captions; state changes are compare-and-set; owner only."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from trainer import jobs
from trainer.models import JobState, TrainingJob

pytestmark = pytest.mark.django_db
REAL_ENQUEUE = jobs.job_enqueue


@pytest.fixture(autouse=True)
def _no_real_queue(monkeypatch):
    """These tests check the web side only; what would be enqueued is recorded, not run."""
    enqueued: list[int] = []
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: enqueued.append(job.pk))
    return enqueued


def test_create_freezes_captions_and_puts_the_trigger_in_each(alice, make_dataset, _no_real_queue):
    dataset = make_dataset(alice, n=3, trigger="zxq")
    first = dataset.photos.first()
    first.caption = "a tabby cat on a sofa"
    first.save()
    job = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny")
    assert job.state == JobState.QUEUED and _no_real_queue == [job.pk]
    assert all("zxq" in row["caption"] for row in job.snapshot)
    assert job.snapshot[0]["caption"] == "zxq, a tabby cat on a sofa"
    first.caption = "changed later"
    first.save()
    job.refresh_from_db()
    assert job.snapshot[0]["caption"] == "zxq, a tabby cat on a sofa"
    assert job.config["steps"] == job.total_steps and job.config["resolution"] == 64


@pytest.mark.parametrize("overrides, field", [
    ({"steps": "0"}, "steps"), ({"resolution": "70"}, "resolution"), ({"learning_rate": "fast"}, "learning_rate"),
    ({"warp_speed": "9"}, "settings"), ({"memory_mode": "tiny-gpu"}, "memory_mode"),
])
def test_bad_settings_are_refused_and_nothing_is_queued(alice, make_dataset, _no_real_queue, overrides, field):
    dataset = make_dataset(alice, n=1)
    with pytest.raises(ValidationError) as info:
        jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny", overrides=overrides)
    assert field in info.value.message_dict
    assert not TrainingJob.objects.exists() and _no_real_queue == []


def test_needs_a_trigger_word_and_photos(alice, make_dataset):
    dataset = make_dataset(alice, n=0, trigger="")
    with pytest.raises(ValidationError, match="trigger word"):
        jobs.job_create(owner=alice, dataset=dataset)
    dataset.trigger_word = "zxq"
    dataset.save()
    with pytest.raises(ValidationError, match="no photos"):
        jobs.job_create(owner=alice, dataset=dataset)


@pytest.mark.parametrize("word", ["has space", "<img src=x>", "a\nb", "x", "é-accent"])
def test_a_trigger_word_the_form_would_refuse_is_refused_at_launch_too(alice, make_dataset, word):
    """The API sends any string; the same rule as the web form holds before anything is stored."""
    dataset = make_dataset(alice, n=1, trigger=word)
    with pytest.raises(ValidationError, match="cannot be a trigger word. Use 2–40 letters, digits"):
        jobs.job_create(owner=alice, dataset=dataset, base_model="tiny")
    assert not TrainingJob.objects.exists()


def test_sample_prompts_over_the_limits_are_refused_not_cut(alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    with pytest.raises(ValidationError, match="at most 4 sample prompts \\(got 5\\)"):
        jobs.job_create(owner=alice, dataset=dataset, base_model="tiny", sample_prompts=[f"zxq {i}" for i in range(5)])
    with pytest.raises(ValidationError, match="sample prompt 2 has more than 1000 characters"):
        jobs.job_create(owner=alice, dataset=dataset, base_model="tiny", sample_prompts=["zxq", "y" * 1001])
    with pytest.raises(ValidationError, match="must be text"):
        jobs.job_create(owner=alice, dataset=dataset, base_model="tiny", sample_prompts=["zxq", 7])  # type: ignore[list-item]
    job = jobs.job_create(owner=alice, dataset=dataset, base_model="tiny", sample_prompts=["  zxq a  ", "", "zxq b"] + [""] * 4)
    assert job.config["sample_prompts"] == ["zxq a", "zxq b"]  # blank lines are not prompts


def test_cancel_a_queued_job_is_immediate_and_claim_then_fails(alice, make_dataset):
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    assert jobs.job_cancel(job=job)
    job.refresh_from_db()
    assert job.state == JobState.CANCELED
    assert jobs.job_claim(job.pk, "w1") is None


def test_only_one_worker_claims_a_job(alice, make_dataset):
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    assert jobs.job_claim(job.pk, "w1") is not None
    assert jobs.job_claim(job.pk, "w2") is None
    job.refresh_from_db()
    assert job.worker_id == "w1" and job.attempts == 1 and job.state == JobState.STARTING


def test_orphaned_job_is_requeued_then_failed_after_max_attempts(alice, make_dataset, monkeypatch):
    import trainer.tasks

    requeued: list[int] = []
    monkeypatch.setattr(trainer.tasks, "train_job_task", lambda pk: requeued.append(pk))
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    jobs.job_claim(job.pk, "ghost-host:999999:gpu")  # no heartbeat row: that worker is dead
    TrainingJob.objects.filter(pk=job.pk).update(step=57, checkpoint_step=50)
    assert jobs.recover_orphaned_jobs() == [job.pk]
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and requeued == [job.pk]
    assert job.step == 50, "the next run starts at the checkpoint, and the pages say so"
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.TRAINING, attempts=jobs.MAX_ATTEMPTS, worker_id="gone",
                                                 step=54)
    jobs.recover_orphaned_jobs()
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "stopped 3 times" in job.error and job.error_hint
    assert job.step == 50, "the steps past the checkpoint died with the worker"


def test_orphaned_job_with_a_cancel_request_ends_canceled_not_requeued(alice, make_dataset, monkeypatch):
    import trainer.tasks

    requeued: list[int] = []
    monkeypatch.setattr(trainer.tasks, "train_job_task", lambda pk: requeued.append(pk))
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    jobs.job_claim(job.pk, "ghost-host:999999:gpu:dead")
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.TRAINING, checkpoint_step=5, step=8)
    assert jobs.job_cancel(job=job)  # the cancel lands, then the worker dies before reading it
    assert jobs.recover_orphaned_jobs() == [job.pk]
    job.refresh_from_db()
    assert job.state == JobState.CANCELED and job.finished_at and requeued == []
    assert job.checkpoint_step == 5 and job.step == 5, "the page shows the step a resume starts from"


def test_a_queued_job_flagged_canceled_is_closed_when_a_worker_picks_it(alice, make_dataset):
    from flux_studio.models import Event

    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    TrainingJob.objects.filter(pk=job.pk).update(cancel_requested=True)  # left so by an older release
    assert jobs.job_claim(job.pk, "w1") is None
    job.refresh_from_db()
    assert job.state == JobState.CANCELED
    assert Event.objects.filter(topic=job.topic, kind="state", data__state="canceled").exists()


def test_a_restarted_worker_with_the_same_host_and_pid_recovers_the_dead_ones_job(alice, make_dataset, monkeypatch):
    """A container restart gives the new worker the old hostname and pid; it must not pass for the old one."""
    import os
    import socket

    import trainer.tasks
    from django.utils import timezone

    from flux_studio import worker
    from flux_studio.models import WorkerHeartbeat

    requeued: list[int] = []
    monkeypatch.setattr(trainer.tasks, "train_job_task", lambda pk: requeued.append(pk))
    old_id = worker.worker_id("gpu")
    # The dead worker beat just before the restart, so its row still looks fresh.
    WorkerHeartbeat.objects.create(worker_id=old_id, hostname=socket.gethostname(), pid=os.getpid(), queue="gpu",
                                   last_seen=timezone.now())
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    jobs.job_claim(job.pk, old_id)
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.TRAINING)
    monkeypatch.setattr(worker, "_INSTANCE", "restarted")  # what a fresh process draws
    try:
        worker.register("gpu", "cpu")
        assert worker.current_worker_id() != old_id and str(os.getpid()) in worker.current_worker_id()
        worker.run_start_hooks()
    finally:
        worker.unregister()
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and requeued == [job.pk]


def test_launch_page_creates_a_job_and_opens_it(alice_client, alice, make_dataset, _no_real_queue):
    dataset = make_dataset(alice, n=2)
    page = alice_client.get(reverse("trainer:job_launch", args=[dataset.pk]))
    assert b"Balanced" in page.content and b"High quality" in page.content
    # each offered base says what it is: demo (the default outside tests) draws on a CPU, tiny only draws noise
    assert b"<strong>demo</strong>: A small FLUX-architecture base pretrained here" in page.content
    assert b"<strong>tiny</strong>: A random FLUX-architecture model built offline, for tests" in page.content
    response = alice_client.post(reverse("trainer:job_launch", args=[dataset.pk]), {"preset": "fast", "base_model": "tiny", "steps": "12"})
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    assert job.total_steps == 12
    bad = alice_client.post(reverse("trainer:job_launch", args=[dataset.pk]), {"preset": "fast", "resolution": "65"})
    assert b"multiple of 16" in bad.content


def test_other_users_get_404_everywhere(alice, bob_client, make_dataset, _no_real_queue):
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    for url in (reverse("trainer:job_detail", args=[job.pk]), reverse("trainer:job_download", args=[job.pk, "lora"]),
                reverse("trainer:job_launch", args=[job.dataset_id])):
        assert bob_client.get(url).status_code == 404
    assert bob_client.post(reverse("trainer:job_cancel", args=[job.pk])).status_code == 404
    job.refresh_from_db()
    assert job.state == JobState.QUEUED
    assert b"pets" not in bob_client.get(reverse("trainer:job_list")).content


def test_bob_gets_404_for_alices_resume_continue_and_samples(alice, bob_client, make_dataset):
    from django.core.files.base import ContentFile

    from tests.conftest import make_image_bytes
    from trainer.models import TrainingSample

    canceled = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    jobs.job_cancel(job=canceled)
    finished = jobs.job_create(owner=alice, dataset=canceled.dataset, base_model="tiny")
    TrainingJob.objects.filter(pk=finished.pk).update(state=JobState.SUCCEEDED)
    sample = TrainingSample(job=finished, step=4, prompt="a photo of zxq")
    sample.image.save("sample.png", ContentFile(make_image_bytes(32, 32)), save=True)

    assert bob_client.post(reverse("trainer:job_resume", args=[canceled.pk])).status_code == 404
    assert bob_client.post(reverse("trainer:job_continue", args=[finished.pk]), {"steps": "5"}).status_code == 404
    assert bob_client.get(reverse("trainer:job_sample", args=[finished.pk, sample.pk])).status_code == 404
    canceled.refresh_from_db()
    assert canceled.state == JobState.CANCELED and TrainingJob.objects.count() == 2


def test_a_finished_training_is_deleted_from_its_page_with_its_files(alice_client, bob_client, alice, make_dataset,
                                                                     django_capture_on_commit_callbacks):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    dataset = make_dataset(alice, n=1)
    running = jobs.job_create(owner=alice, dataset=dataset, base_model="tiny")
    finished = jobs.job_create(owner=alice, dataset=dataset, base_model="tiny")
    TrainingJob.objects.filter(pk=finished.pk).update(state=JobState.SUCCEEDED)
    finished.refresh_from_db()
    finished.lora_file.save("lora.safetensors", ContentFile(b"weights"), save=True)
    stored = finished.lora_file.name

    page = alice_client.get(finished.get_absolute_url())
    assert b'id="delete"' in page.content
    assert b'id="delete-form" hidden' in alice_client.get(running.get_absolute_url()).content  # cancel first
    assert bob_client.post(reverse("trainer:job_delete", args=[finished.pk])).status_code == 404
    refused = alice_client.post(reverse("trainer:job_delete", args=[running.pk]), follow=True)
    assert "cancel it first" in refused.content.decode() and TrainingJob.objects.filter(pk=running.pk).exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(reverse("trainer:job_delete", args=[finished.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("trainer:job_list")
    assert "Deleted" in response.content.decode()
    assert not TrainingJob.objects.filter(pk=finished.pk).exists()
    assert not default_storage.exists(stored)  # the LoRA's weights are gone, not just the row
    assert dataset.photos.count() == 1  # the dataset stays


def test_memory_mode_is_a_launch_setting_and_a_resume_may_switch_to_low(alice_client, alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    page = alice_client.get(reverse("trainer:job_launch", args=[dataset.pk]))
    assert b'name="memory_mode"' in page.content and b"Low memory" in page.content
    alice_client.post(reverse("trainer:job_launch", args=[dataset.pk]), {"preset": "fast", "base_model": "tiny", "memory_mode": "low"})
    assert TrainingJob.objects.get().config["memory_mode"] == "low"
    default = jobs.job_create(owner=alice, dataset=dataset, base_model="tiny")
    assert default.config["memory_mode"] == "fast"
    TrainingJob.objects.filter(pk=default.pk).update(state=JobState.FAILED, error="out of memory on cuda:0")
    assert b'id="resume-low-memory"' in alice_client.get(default.get_absolute_url()).content
    alice_client.post(reverse("trainer:job_resume", args=[default.pk]), {"memory_mode": "low"})
    default.refresh_from_db()
    assert default.state == JobState.QUEUED and default.config["memory_mode"] == "low"


def test_queue_position_is_live_and_counts_from_the_re_enqueue(alice_client, alice, make_dataset, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    import trainer.tasks
    from flux_studio.models import Event

    monkeypatch.setattr(jobs, "job_enqueue", REAL_ENQUEUE)
    monkeypatch.setattr(trainer.tasks, "train_job_task", lambda pk: None)  # no worker: only the positions

    def position(job) -> int:
        return Event.objects.filter(topic=job.topic, kind="queue").latest("id").data["position"]

    dataset = make_dataset(alice, n=1)
    with django_capture_on_commit_callbacks(execute=True):
        first = jobs.job_create(owner=alice, dataset=dataset, base_model="tiny")
        second = jobs.job_create(owner=alice, dataset=dataset, base_model="tiny")
    assert (position(first), position(second)) == (1, 2)
    jobs.job_claim(first.pk, "w1")
    assert position(second) == 1
    TrainingJob.objects.filter(pk=first.pk).update(state=JobState.CANCELED)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.job_resume(job=first)  # created first, but back in the queue after `second`
    assert (position(second), position(first)) == (1, 2)
    first.refresh_from_db()
    assert first.enqueued_at > second.enqueued_at and "enqueued_at" not in first.config, "not a training setting"
    assert b"position 2 in the queue" in alice_client.get(first.get_absolute_url()).content
    jobs.job_claim(second.pk, "w1")
    assert position(first) == 1
    assert Event.objects.filter(topic=first.topic, kind="queue").latest("id").data["running"] == 1


@pytest.mark.parametrize("steps", [1.5, "1.5", True])
def test_a_count_that_is_not_a_whole_number_is_refused_not_rounded(steps):
    with pytest.raises(ValidationError) as refused:
        jobs.clean_settings(preset="fast", base_model="tiny", overrides={"steps": steps}, sample_prompts=[])
    assert "whole number" in str(refused.value)
    assert jobs.clean_settings(preset="fast", base_model="tiny", overrides={"steps": 20.0}, sample_prompts=[])["steps"] == 20


def test_a_resume_says_where_it_starts(alice, make_dataset):
    from flux_studio.models import Event

    dataset = make_dataset(alice, n=1)
    never, stopped = (jobs.job_create(owner=alice, dataset=dataset, base_model="tiny") for _ in range(2))
    TrainingJob.objects.filter(pk=never.pk).update(state=JobState.FAILED, error="base did not load")
    TrainingJob.objects.filter(pk=never.pk).update(step=3)  # it failed at step 3, before a checkpoint
    TrainingJob.objects.filter(pk=stopped.pk).update(state=JobState.CANCELED, checkpoint_step=40, step=47)
    for job in (never, stopped):
        jobs.job_resume(job=job)
    states = {job.pk: Event.objects.filter(topic=job.topic, kind="state").latest("id").data for job in (never, stopped)}
    assert {pk: data["message"] for pk, data in states.items()} == {
        never.pk: "Running again from the start.", stopped.pk: "Resuming from step 40."}
    # The pages show the step the next run starts from, not the last one the stopped run reached.
    assert {pk: data["step"] for pk, data in states.items()} == {never.pk: 0, stopped.pk: 40}
    assert {job.pk: job.step for job in TrainingJob.objects.filter(pk__in=states)} == {never.pk: 0, stopped.pk: 40}
