"""Auto-captions: the task body with a real tiny Florence-2, run in-process (no queue)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flux_studio.models import Event, WorkerHeartbeat
from trainer.captions import UNAVAILABLE_PREFIX, caption_dataset_task, captions_enqueue
from trainer.models import CaptionSource, Photo

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="session")
def tiny_florence(tmp_path_factory) -> str:
    from trainer.engine.captioning import build_tiny_florence2

    folder = tmp_path_factory.mktemp("tiny-florence2")
    build_tiny_florence2(folder)
    return f"florence2:{folder}"


@pytest.fixture(scope="session")
def tiny_smolvlm(tmp_path_factory) -> str:
    from trainer.engine.captioning import build_tiny_smolvlm

    folder = tmp_path_factory.mktemp("tiny-smolvlm")
    build_tiny_smolvlm(folder)
    return f"vlm:{folder}"


@pytest.fixture
def captioner(settings, tiny_florence) -> str:
    settings.CAPTIONER = tiny_florence
    return tiny_florence


def events(dataset, kind):
    return [e.data for e in Event.objects.filter(topic=dataset.topic, kind=kind).order_by("id")]


def test_task_fills_captions_live_with_trigger_prefix_and_suffix(captioner, dataset, add_photo):
    dataset.caption_prefix, dataset.caption_suffix = "photo of", "film grain"
    dataset.save()
    photos = [add_photo() for _ in range(3)]
    caption_dataset_task.call_local(dataset.pk, None, False)
    for photo in photos:
        photo.refresh_from_db()
        assert photo.caption_source == CaptionSource.AUTO and photo.caption_error == ""
        assert photo.caption.startswith("photo of") and photo.caption.rstrip(".").endswith("film grain")
        assert "MIRAZX" in photo.caption
    live = events(dataset, "caption")
    assert [e["photo_id"] for e in live] == [p.pk for p in photos]
    assert all(e["caption"] and e["error"] == "" for e in live)
    runs = events(dataset, "captioning")
    assert [e["state"] for e in runs] == ["started", "started", "finished"]
    assert runs[0]["message"].startswith("Loading ") and runs[1]["message"].startswith("Captioning 3 photos")


@pytest.mark.parametrize("placement", ["suffix", "replace"])
def test_trigger_placement(captioner, dataset, add_photo, placement):
    dataset.caption_placement = placement
    dataset.save()
    photo = add_photo()
    caption_dataset_task.call_local(dataset.pk, None, False)
    photo.refresh_from_db()
    assert "MIRAZX" in photo.caption
    if placement == "suffix":
        assert photo.caption.rstrip(".").endswith("MIRAZX")


def test_user_edits_survive_recaption_unless_overwrite(captioner, dataset, add_photo):
    mine, auto = add_photo(), add_photo()
    mine.caption, mine.caption_source = "MIRAZX, my words", CaptionSource.USER
    mine.save()
    caption_dataset_task.call_local(dataset.pk, None, False)
    mine.refresh_from_db(), auto.refresh_from_db()
    assert mine.caption == "MIRAZX, my words" and auto.caption_source == CaptionSource.AUTO
    assert [e["photo_id"] for e in events(dataset, "caption")] == [auto.pk]
    caption_dataset_task.call_local(dataset.pk, [mine.pk], True)
    mine.refresh_from_db()
    assert mine.caption_source == CaptionSource.AUTO and mine.caption != "MIRAZX, my words"


def test_captions_from_a_zips_txt_files_survive_recaption_unless_overwrite(captioner, dataset, add_photo):
    uploaded, empty = add_photo(caption="MIRAZX asleep on the windowsill"), add_photo()
    assert uploaded.caption_source == CaptionSource.FILE
    caption_dataset_task.call_local(dataset.pk, None, False)
    uploaded.refresh_from_db(), empty.refresh_from_db()
    assert uploaded.caption == "MIRAZX asleep on the windowsill" and uploaded.caption_source == CaptionSource.FILE
    assert empty.caption_source == CaptionSource.AUTO
    assert [e["photo_id"] for e in events(dataset, "caption")] == [empty.pk]
    caption_dataset_task.call_local(dataset.pk, [uploaded.pk], True)
    uploaded.refresh_from_db()
    assert uploaded.caption_source == CaptionSource.AUTO and uploaded.caption != "MIRAZX asleep on the windowsill"


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_edit_made_while_captioning_runs_is_kept_and_counted_as_kept(captioner, dataset, add_photo, monkeypatch,
                                                                         overwrite):
    from flux_studio import events as event_module
    from trainer.datasets import photo_caption_set

    first, edited = add_photo(), add_photo()
    publish = event_module.publish

    def publish_then_type(topic, kind, data):
        publish(topic, kind, data)
        if kind == "captioning" and data["state"] == "started":  # the task has read the photos
            photo_caption_set(photo=Photo.objects.get(pk=edited.pk), caption="MIRAZX, typed while it ran")

    monkeypatch.setattr(event_module, "publish", publish_then_type)
    caption_dataset_task.call_local(dataset.pk, None, overwrite)
    first.refresh_from_db(), edited.refresh_from_db()
    assert first.caption_source == CaptionSource.AUTO
    assert edited.caption == "MIRAZX, typed while it ran" and edited.caption_source == CaptionSource.USER
    finished = events(dataset, "captioning")[-1]
    assert finished["done"] == 1 and finished["kept"] == 1 and finished["failed"] == 0
    assert "could not be captioned" not in finished["message"] and "Kept your caption on 1 photo" in finished["message"]
    assert [e["source"] for e in events(dataset, "caption")] == ["auto", "user"]


def test_excluded_photos_are_not_captioned(captioner, dataset, add_photo):
    used, excluded = add_photo(), add_photo()
    Photo.objects.filter(pk=excluded.pk).update(excluded=True)
    caption_dataset_task.call_local(dataset.pk, None, False)
    caption_dataset_task.call_local(dataset.pk, [excluded.pk], True)
    excluded.refresh_from_db()
    assert excluded.caption == "" and excluded.caption_source == CaptionSource.NONE
    assert [e["photo_id"] for e in events(dataset, "caption")] == [used.pk]


def test_a_broken_photo_is_reported_and_the_rest_captioned(captioner, dataset, add_photo):
    good, broken, other = add_photo(), add_photo(), add_photo()
    Path(broken.image.path).write_bytes(b"this is no longer a jpeg")
    caption_dataset_task.call_local(dataset.pk, None, False)
    for photo in (good, broken, other):
        photo.refresh_from_db()
    assert good.caption and other.caption
    assert broken.caption == "" and broken.caption_error
    failed = [e for e in events(dataset, "caption") if e["error"]]
    assert [e["photo_id"] for e in failed] == [broken.pk]
    assert "1 could not be captioned" in events(dataset, "captioning")[-1]["message"]


def test_unavailable_captioner_says_so_plainly(settings, dataset, add_photo, tmp_path):
    settings.CAPTIONER = f"florence2:{tmp_path / 'no-such-model'}"
    photo = add_photo()
    caption_dataset_task.call_local(dataset.pk, None, False)
    photo.refresh_from_db()
    assert photo.caption == ""
    loading, event = events(dataset, "captioning")
    assert loading["state"] == "started" and loading["message"].startswith("Loading florence2:")
    assert event["state"] == "unavailable"
    assert event["message"].startswith(f"{UNAVAILABLE_PREFIX}: ") and "template" in event["message"]


def test_a_captioner_that_fails_to_load_ends_the_run_with_the_reason(dataset, add_photo, monkeypatch):
    """Not only "unavailable": any error while loading ends the run, or its live worker would
    leave it "started" for ever."""
    from trainer import captions
    from trainer.captions import captioning_latest

    def broken(spec, prompt):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(captions, "_load_with_prompt", broken)
    add_photo()
    caption_dataset_task.call_local(dataset.pk, None, False)
    run = captioning_latest(dataset)
    assert run.failed and "could not load" in run.message and "illegal memory access" in run.message


def test_a_worker_killed_while_loading_the_captioner_is_seen_dead(dataset, add_photo, monkeypatch):
    from flux_studio import worker
    from trainer import captions
    from trainer.captions import captioning_latest

    seen = []

    def killed_while_loading(spec, prompt):
        WorkerHeartbeat.objects.filter(worker_id=worker.current_worker_id()).delete()  # as if OOM-killed
        seen.append(captioning_latest(dataset).failed)
        raise SystemExit  # the process is gone: nothing after this runs

    monkeypatch.setattr(captions, "_load_with_prompt", killed_while_loading)
    add_photo()
    worker.register("gpu", "cpu")
    try:
        with pytest.raises(SystemExit):
            caption_dataset_task.call_local(dataset.pk, None, False)
    finally:
        worker.unregister()
    assert seen == [True] and "stopped without finishing" in captioning_latest(dataset).message


def test_nothing_to_caption_when_all_were_written_by_the_person(settings, dataset, add_photo):
    settings.CAPTIONER = "florence2:/nowhere"  # never loaded: there is no work
    photo = add_photo()
    photo.caption, photo.caption_source = "mine", CaptionSource.USER
    photo.save()
    caption_dataset_task.call_local(dataset.pk, None, False)
    assert events(dataset, "captioning")[0]["state"] == "finished"


def test_enqueue_waits_for_commit_and_keeps_only_this_datasets_photos(dataset, add_photo, monkeypatch,
                                                                      django_capture_on_commit_callbacks):
    calls = []
    monkeypatch.setattr("trainer.captions.caption_dataset_task", lambda *args: calls.append(args))
    photo = add_photo()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        captions_enqueue(dataset=dataset, photo_ids=[photo.pk, 424242])
    assert calls == []
    callbacks[0]()
    assert calls == [(dataset.pk, [photo.pk], False)]
    assert events(dataset, "captioning")[0]["state"] == "queued"


def test_the_caption_prompt_reaches_the_instruction_following_captioner(settings, dataset, add_photo, tiny_smolvlm,
                                                                         monkeypatch):
    from transformers import Idefics3Processor

    settings.CAPTIONER, settings.CAPTION_PROMPT = tiny_smolvlm, "Describe the houseplant, studio-wide."
    prompts: list[str] = []
    original = Idefics3Processor.__call__

    def recording_call(self, *args, **kwargs):  # the real processor, watched
        prompts.extend(kwargs.get("text") or [])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Idefics3Processor, "__call__", recording_call)
    photo = add_photo()
    caption_dataset_task.call_local(dataset.pk, None, False)
    photo.refresh_from_db()
    assert photo.caption_source == CaptionSource.AUTO and "MIRAZX" in photo.caption
    assert prompts and all("Describe the houseplant, studio-wide." in text for text in prompts)

    dataset.caption_prompt = "Say what MIRAZX is doing, in one sentence."  # the dataset's own prompt wins
    dataset.save()
    prompts.clear()
    caption_dataset_task.call_local(dataset.pk, None, True)
    assert prompts and all("Say what MIRAZX is doing" in t and "studio-wide" not in t for t in prompts)


def test_the_captioner_is_freed_before_training_starts(captioner, alice, dataset, add_photo, monkeypatch):
    from PIL import Image

    import trainer.engine
    from trainer import jobs
    from trainer.engine.captioning import load_captioner, loading
    from trainer.models import JobState
    from trainer.training_run import run_training

    add_photo(), add_photo()
    caption_dataset_task.call_local(dataset.pk, None, False)
    assert loading._CACHE  # the worker keeps the captioner loaded between captioning runs
    held = load_captioner(captioner)

    real_train, at_start = trainer.engine.train, []

    def train_and_note_the_cache(config, hooks):  # the real training, noting what is loaded when it starts
        at_start.append(len(loading._CACHE))
        return real_train(config, hooks)

    monkeypatch.setattr(trainer.engine, "train", train_and_note_the_cache)
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)  # run below, in this process
    job = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny",
                          overrides={"steps": 2, "sample_every": 0})
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error
    assert at_start == [0] and not loading._CACHE
    with pytest.raises(RuntimeError, match="unloaded"):  # a captioner held from before cannot pin the memory
        held.caption_batch([Image.new("RGB", (32, 32))])


def test_photos_in_remote_storage_are_captioned_from_copies_that_are_removed(
    captioner, dataset, add_photo, remote_storage, settings
):
    photos = [add_photo() for _ in range(2)]
    caption_dataset_task.call_local(dataset.pk, None, False)
    for photo in photos:
        photo.refresh_from_db()
        assert photo.caption_source == CaptionSource.AUTO and "MIRAZX" in photo.caption
    copies = settings.WORK_DIR / "captions"  # on the worker's disk, not the system's temp folder
    assert copies.is_dir() and list(copies.iterdir()) == []


def test_a_starting_gpu_worker_removes_photo_copies_a_killed_captioning_left(settings):
    import os
    import time

    from flux_studio import worker
    from flux_studio.management.commands.run_worker import import_task_modules
    from trainer.captions import captions_work_root

    stale, young = captions_work_root() / "killed", captions_work_root() / "running"
    for folder in (stale, young):
        folder.mkdir(parents=True)
        (folder / "1.jpg").write_bytes(b"photo")
    then = time.time() - 7 * 3600
    os.utime(stale, (then, then))
    import_task_modules()
    worker.run_start_hooks()
    assert not stale.exists()
    assert (young / "1.jpg").is_file()  # another worker process may be captioning from it


def test_a_run_whose_worker_died_is_reported_stopped_not_running_forever(dataset, alice_client):
    from datetime import timedelta

    from django.utils import timezone

    from flux_studio import events
    from trainer.captions import captioning_latest

    events.publish(dataset.topic, "captioning", {"state": "started", "total": 9, "done": 0, "message": "Captioning 9 photos…"})
    events.publish(dataset.topic, "caption", {"photo_id": 1, "caption": "a cat"})
    assert captioning_latest(dataset).running  # captions are still arriving
    Event.objects.filter(topic=dataset.topic).update(created_at=timezone.now() - timedelta(minutes=20))
    run = captioning_latest(dataset)
    assert run.failed and "stopped without finishing" in run.message
    page = alice_client.get(dataset.get_absolute_url()).content.decode()
    assert "stopped without finishing" in page
    # A run queued behind a long training is only waiting: never reported stopped.
    events.publish(dataset.topic, "captioning", {"state": "queued", "message": "Captioning is queued."})
    Event.objects.filter(topic=dataset.topic).update(created_at=timezone.now() - timedelta(hours=3))
    assert captioning_latest(dataset).running


def _heartbeat(worker_id: str, *, seconds_ago: float):
    """A heartbeat row of a worker on another machine (so only its heartbeat can tell whether it lives)."""
    from datetime import timedelta

    from django.utils import timezone

    from flux_studio.models import WorkerHeartbeat

    return WorkerHeartbeat.objects.create(worker_id=worker_id, hostname="gpu-box-2", pid=4242, queue="gpu",
                                          last_seen=timezone.now() - timedelta(seconds=seconds_ago))


def _started_by(dataset, worker_id: int | None, *, minutes_ago: float = 0) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from flux_studio import events

    data = {"state": "started", "total": 9, "done": 0, "message": "Captioning 9 photos…"}
    if worker_id is not None:
        data["worker"] = worker_id
    events.publish(dataset.topic, "captioning", data)
    Event.objects.filter(topic=dataset.topic).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))


@pytest.mark.parametrize("heartbeat_age_s", [None, 3600], ids=["heartbeat-gone", "heartbeat-stale"])
def test_a_run_whose_worker_is_dead_is_reported_stopped_at_once(dataset, alice_client, heartbeat_age_s):
    from trainer.captions import captioning_latest

    heartbeat = _heartbeat("gpu-box-2:4242:gpu:dead", seconds_ago=heartbeat_age_s or 0).pk
    if heartbeat_age_s is None:
        WorkerHeartbeat.objects.filter(pk=heartbeat).delete()  # removed: it stopped, or stale rows were swept
    _started_by(dataset, heartbeat)  # a moment ago: no silence to wait out
    run = captioning_latest(dataset)
    assert run.failed and "stopped without finishing" in run.message
    assert "stopped without finishing" in alice_client.get(dataset.get_absolute_url()).content.decode()


def test_a_slow_run_whose_worker_still_beats_is_not_reported_stopped(dataset, alice_client):
    """A big captioner may load for longer than STALE_AFTER_S; a live worker is never given up on."""
    from trainer.captions import STALE_AFTER_S, captioning_latest

    row = _heartbeat("gpu-box-2:4242:gpu:alive", seconds_ago=1)
    _started_by(dataset, row.pk, minutes_ago=STALE_AFTER_S / 60 + 5)
    assert captioning_latest(dataset).running
    page = alice_client.get(dataset.get_absolute_url()).content.decode()
    assert "stopped without finishing" not in page and "Captioning 9 photos…" in page


@pytest.mark.parametrize("worker_id", [None, "gpu-box-2:4242:gpu:x"], ids=["inline-or-older", "not-a-heartbeat-id"])
def test_a_run_without_a_known_worker_falls_back_to_its_silence(dataset, worker_id):
    from trainer.captions import captioning_latest

    _started_by(dataset, worker_id, minutes_ago=1)
    assert captioning_latest(dataset).running  # no heartbeat to read: not taken for a dead worker
    # the README's 15 minutes without a new caption, either side of it
    Event.objects.filter(topic=dataset.topic).delete()
    _started_by(dataset, worker_id, minutes_ago=14)
    assert captioning_latest(dataset).running
    Event.objects.filter(topic=dataset.topic).delete()
    _started_by(dataset, worker_id, minutes_ago=16)
    assert captioning_latest(dataset).failed


def test_the_worker_running_captioning_is_recorded_and_its_death_seen_at_once(captioner, dataset, add_photo,
                                                                              monkeypatch):
    from flux_studio import worker
    from flux_studio.models import WorkerHeartbeat
    from trainer import captions

    photo = add_photo()
    seen: list[tuple[object, bool]] = []
    caption_photos = captions._caption_photos

    def lose_the_worker_then_caption(*args, **kwargs):
        """The real captioning, once the model has loaded and the worker's heartbeat row is gone."""
        seen.append((events(dataset, "captioning")[-1]["worker"], captions.captioning_latest(dataset).running))
        WorkerHeartbeat.objects.filter(worker_id=worker.current_worker_id()).delete()  # as if killed
        seen.append(("after", captions.captioning_latest(dataset).failed))
        return caption_photos(*args, **kwargs)

    monkeypatch.setattr(captions, "_caption_photos", lose_the_worker_then_caption)
    worker.register("gpu", "cpu")
    try:
        running_on = worker.current_heartbeat()
        caption_dataset_task.call_local(dataset.pk, None, False)
    finally:
        worker.unregister()
    assert seen == [(running_on, True), ("after", True)]
    photo.refresh_from_db()
    assert photo.caption_source == CaptionSource.AUTO and "MIRAZX" in photo.caption, "the tiny captioner really ran"
    import socket

    assert isinstance(running_on, int) and socket.gethostname() not in str(events(dataset, "captioning")), \
        "the owner's browser gets the event: it names the worker's heartbeat row, not the host"


def test_a_captioner_no_longer_offered_is_not_loaded(captioner, dataset, add_photo, monkeypatch):
    """A folder stored before the studio checked captioners (or dropped from CAPTIONERS since)."""
    import trainer.engine.captioning as captioning

    def never(*args, **kwargs):
        raise AssertionError("the worker loaded a captioner that is not offered")

    monkeypatch.setattr(captioning, "load_captioner", never)
    dataset.captioner = "florence2:/etc"
    dataset.save()
    photo = add_photo()
    caption_dataset_task.call_local(dataset.pk, None, False)
    [run] = events(dataset, "captioning")
    assert run["state"] == "failed" and "not a captioner offered here" in run["message"]
    photo.refresh_from_db()
    assert photo.caption_source != CaptionSource.AUTO
