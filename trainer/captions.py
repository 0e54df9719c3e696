"""Auto-captions: enqueue from the web, caption on the GPU worker, stream each caption live.

Events on topic `dataset-<id>` (the grid watches them with FluxLive.watch("dataset", id)):
  - "captioning" {state: "queued" | "started" | "finished" | "unavailable" | "failed", message, total, done};
    "started" also names the worker running it (`worker`: its heartbeat row id, no host or pid), so
    a run whose worker died reads as stopped.
  - "caption" {photo_id, caption, error}: one per photo, as soon as it is saved.
Web processes never import torch: the engine is imported inside the task body only.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from flux_studio import events, worker
from flux_studio.models import Event
from flux_studio.queues import gpu_queue
from trainer.models import CaptionSource, Dataset, Photo

log = logging.getLogger(__name__)

UNAVAILABLE_PREFIX = "no captioner weights can be loaded here"
BATCH_SIZE = 4
# Captions a person chose: typed in the grid, or brought along as same-name .txt files in a
# zip. Re-captioning never replaces them unless the person asks to overwrite.
PROTECTED_SOURCES = (CaptionSource.USER, CaptionSource.FILE)


FAILED_STATES = ("unavailable", "failed")
RUNNING_STATES = ("queued", "started")


@dataclass(frozen=True)
class CaptioningRun:
    """The dataset's latest auto-captioning run, as its last "captioning" event tells it."""

    state: str  # queued | started | finished | unavailable | failed
    message: str
    data: dict[str, Any]
    at: datetime

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES


# A started run names its worker: once that worker is dead (flux_studio.worker.is_dead: heartbeat
# stale or gone, process gone) the run will not finish; while it lives the run is under way, however
# slow (a big captioner may load for many minutes). A run without a known worker (started inline, or
# by code older than the `worker` field) falls back to silence: one that published no caption for
# this long after it started lost its worker. (A queued run may wait behind a long training, so only
# a started one is ever reported stopped.)
STALE_AFTER_S = 15 * 60
STOPPED_MESSAGE = ("The last auto-captioning run stopped without finishing (its worker was stopped or restarted). "
                   "Run it again: the captions it already wrote are kept.")


def captioning_latest(dataset: Dataset) -> CaptioningRun | None:
    """The latest run, or None when the dataset was never auto-captioned. The page shows a
    failure or a run under way from it on load (the live events only bring newer news)."""
    event = Event.objects.filter(topic=dataset.topic, kind="captioning").order_by("-id").first()
    if event is None:
        return None
    data = event.data or {}
    run = CaptioningRun(state=str(data.get("state", "")), message=str(data.get("message") or ""), data=data,
                        at=event.created_at)
    if run.state != "started":
        return run
    runner = data.get("worker")
    if isinstance(runner, int) and not isinstance(runner, bool):  # its worker is known: no guessing
        if not worker.heartbeat_is_dead(runner):
            return run
        last = _last_news(dataset, run)
    else:  # started inline or by older code: only a long silence tells
        last = _last_news(dataset, run)
        if timezone.now() - last <= timedelta(seconds=STALE_AFTER_S):
            return run
    return CaptioningRun(state="failed", message=STOPPED_MESSAGE, at=last,
                         data={**data, "state": "failed", "message": STOPPED_MESSAGE})


def _last_news(dataset: Dataset, run: CaptioningRun) -> datetime:
    """When the dataset's latest caption or captioning event came: the run's own at the earliest."""
    last = (Event.objects.filter(topic=dataset.topic, kind__in=("caption", "captioning")).order_by("-id")
            .values_list("created_at", flat=True).first())
    return last or run.at


def captions_enqueue(*, dataset: Dataset, photo_ids: Iterable[int] | None = None, overwrite: bool = False) -> None:
    """Queue captioning of the dataset (or just `photo_ids`) once this transaction commits."""
    ids = sorted(set(dataset.photos.filter(pk__in=list(photo_ids)).values_list("pk", flat=True))) if photo_ids is not None else None
    dataset_id, topic = dataset.pk, dataset.topic

    def enqueue() -> None:
        # "queued" gives the grid instant feedback even while the GPU is busy with a training.
        events.publish(topic, "captioning", {"state": "queued", "message": "Captioning is queued."})
        caption_dataset_task(dataset_id, ids, overwrite)

    transaction.on_commit(enqueue)


@gpu_queue.task()
def caption_dataset_task(dataset_id: int, photo_ids: list[int] | None, overwrite: bool) -> None:
    run_captioning(dataset_id=dataset_id, photo_ids=photo_ids, overwrite=overwrite)


def photos_to_caption(dataset: Dataset, photo_ids: list[int] | None, overwrite: bool) -> list[Photo]:
    """The chosen photos that train (excluded ones never do, so they are not captioned), minus
    the captions the person wrote or uploaded unless `overwrite`."""
    photos = dataset.photos.filter(excluded=False)
    if photo_ids is not None:
        photos = photos.filter(pk__in=photo_ids)
    if not overwrite:
        photos = photos.exclude(caption_source__in=PROTECTED_SOURCES)
    return list(photos.order_by("id"))


def run_captioning(*, dataset_id: int, photo_ids: list[int] | None, overwrite: bool) -> None:
    """The task body: load the captioner once, caption each photo, save and publish each result."""
    from trainer.engine.captioning import CaptionerUnavailable, CaptionStyle

    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None:
        return  # deleted while queued
    topic = dataset.topic
    photos = photos_to_caption(dataset, photo_ids, overwrite)
    if not photos:
        events.publish(topic, "captioning", {"state": "finished", "total": 0, "done": 0,
                                             "message": "Nothing to caption: every chosen caption was written or uploaded by you."})
        return
    spec = dataset.captioner or settings.CAPTIONER
    from trainer.forms import captioner_refusal

    if refusal := captioner_refusal(spec):  # chosen before the studio checked, or no longer offered
        events.publish(topic, "captioning", {"state": "failed", "message": f"Captioning did not start: {refusal}."})
        return
    # Started (naming this worker) before the model loads: a worker killed while loading a big
    # captioner (out of memory) is then seen dead, not left "queued" for ever.
    started = {"state": "started", "total": len(photos), "done": 0, "worker": worker.current_heartbeat()}
    events.publish(topic, "captioning", {**started, "message": f"Loading {spec}…"})
    try:
        captioner = _load_with_prompt(spec, caption_prompt(dataset))
    except CaptionerUnavailable as exc:
        events.publish(topic, "captioning", {"state": "unavailable", "message": f"{UNAVAILABLE_PREFIX}: {exc}"})
        return
    except Exception as exc:  # a live worker must not leave the run "started" for ever
        log.exception("loading captioner %s for dataset %s failed", spec, dataset_id)
        events.publish(topic, "captioning", {"state": "failed", "message": f"Captioning stopped: {spec} could not load: {exc}"})
        return
    style = CaptionStyle(trigger=dataset.trigger_word, placement=dataset.caption_placement,
                         prefix=dataset.caption_prefix, suffix=dataset.caption_suffix)
    events.publish(topic, "captioning", {**started, "message": f"Captioning {_photos(len(photos))} with {spec}…"})
    try:
        counts = _caption_photos(captioner, photos, style, topic=topic, overwrite=overwrite)
    except Exception as exc:  # report, do not leave the page waiting forever
        log.exception("captioning dataset %s failed", dataset_id)
        events.publish(topic, "captioning", {"state": "failed", "message": f"Captioning stopped: {exc}"})
        return
    events.publish(topic, "captioning", {"state": "finished", "total": len(photos), "done": counts["saved"],
                                         "kept": counts["kept"], "failed": counts["failed"],
                                         "message": _summary(counts)})


def caption_prompt(dataset: Dataset) -> str:
    """The dataset's caption prompt, else the studio's CAPTION_PROMPT, else "" (the engine's
    default instruction)."""
    return dataset.caption_prompt.strip() or settings.CAPTION_PROMPT.strip()


def _load_with_prompt(spec: str, prompt: str) -> Any:
    """The captioner for `spec`, given `prompt` where its family can use it (see
    trainer.engine.captioning.prompt_for_kind); the family is known once the model is loaded."""
    from trainer.engine.captioning import load_captioner, prompt_for_kind

    captioner = load_captioner(spec)
    usable = prompt_for_kind(captioner.kind, prompt)
    return captioner if usable is None else load_captioner(spec, prompt=usable)  # same cached model


def _caption_photos(captioner: Any, photos: list[Photo], style: Any, *, topic: str, overwrite: bool) -> Counter[str]:
    """Caption `photos`, saving and publishing each result as it comes; count the outcomes."""
    from trainer.engine.captioning import caption_images

    counts: Counter[str] = Counter()
    with _local_paths(photos) as paths:
        by_path = {str(path): photo for path, photo in zip(paths, photos)}

        def on_caption(result: Any) -> None:
            photo = by_path[str(result.path)]
            outcome = _save_caption(photo, result.caption, result.error, overwrite=overwrite)
            counts[outcome] += 1
            if outcome != "gone":
                error = result.error if outcome == "failed" else ""
                events.publish(topic, "caption", {"photo_id": photo.pk, "caption": photo.caption,
                                                  "source": photo.caption_source, "error": error or ""})

        caption_images(captioner, paths, batch_size=BATCH_SIZE, style=style, on_caption=on_caption)
    return counts


def _photos(count: int) -> str:
    return f"{count} photo{'s' if count != 1 else ''}"


def _summary(counts: Counter[str]) -> str:
    message = f"Captioned {_photos(counts['saved'])}."
    if counts["kept"]:
        message += f" Kept your caption on {_photos(counts['kept'])} (edited while captioning ran)."
    if counts["failed"]:
        message += f" {counts['failed']} could not be captioned."
    return message


def _save_caption(photo: Photo, caption: str, error: str | None, *, overwrite: bool) -> str:
    """Save one result; "saved", "failed" (the captioner's error is recorded), "gone" (the
    photo was deleted meanwhile) or "kept": a caption the person owns stays, and one they
    edited while the task ran stays even when `overwrite` was asked (it was asked before)."""
    with transaction.atomic():
        current = Photo.objects.select_for_update().filter(pk=photo.pk).first()
        if current is None:
            return "gone"
        edited_meanwhile = (current.caption, current.caption_source) != (photo.caption, photo.caption_source)
        if current.caption_source in PROTECTED_SOURCES and (edited_meanwhile or not overwrite):
            photo.caption, photo.caption_source = current.caption, current.caption_source
            return "kept"
        if error:
            current.caption_error = error[:300]
            current.save(update_fields=["caption_error"])
        else:
            current.caption, current.caption_source, current.caption_error = caption, CaptionSource.AUTO, ""
            current.save(update_fields=["caption", "caption_source", "caption_error"])
    photo.caption, photo.caption_source, photo.caption_error = current.caption, current.caption_source, current.caption_error
    return "failed" if error else "saved"


# A captioning run copies its photos once and finishes in minutes (at most MAX_PHOTOS_PER_DATASET
# photos); a copy folder older than this was left by a worker that was killed.
STALE_CAPTION_COPIES_S = 6 * 3600


def captions_work_root() -> Path:
    """Where captioning copies photos from remote storage (S3) on this machine."""
    return settings.WORK_DIR / "captions"


def sweep_caption_copies() -> list[str]:
    """Remove photo copies that killed captioning runs left; younger ones may be in use by
    another worker process on this machine. Returns the folder names removed."""
    root = captions_work_root()
    if not root.is_dir():
        return []
    removed = []
    cutoff = time.time() - STALE_CAPTION_COPIES_S
    for folder in root.iterdir():
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder) if folder.is_dir() else folder.unlink()
                removed.append(folder.name)
        except OSError:
            log.warning("removing %s failed; left in place", folder, exc_info=True)
    return removed


@contextmanager
def _local_paths(photos: list[Photo]) -> Iterator[list[Path]]:
    """Paths the engine can open: the files themselves locally, temporary copies from S3."""
    try:
        local = [Path(photo.image.path) for photo in photos]
    except NotImplementedError:  # remote storage has no .path
        local = None
    if local is not None:
        yield local
        return
    root = captions_work_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=root))  # a killed worker's leftovers are swept at the next start
    try:
        paths = []
        for photo in photos:
            target = folder / f"{photo.pk}.jpg"
            with photo.image.open("rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            paths.append(target)
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)
