"""API objects: what GET returns for a training, prediction, file or model (and what webhooks send).

Shapes follow Replicate's API (id, status, input, output, logs, error, metrics, timestamps,
urls) so its users feel at home. Every file URL points at an ownership-checked download view of
this API, never at storage.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.urls import reverse

from flux_studio.api.common import Urls, iso
from flux_studio.api.models import ApiToken, FileUpload
from flux_studio.models import Event
from gallery import selectors as gallery_selectors
from gallery.models import GalleryModel, Generation, GenerationState, HubState
from trainer import job_queue
from trainer.captions import captioning_latest
from trainer.models import Dataset, JobState, Photo, TrainingJob
from trainer.selectors import dataset_health

# Replicate's statuses: starting, processing, succeeded, failed, canceled.
TRAINING_STATUS = {
    JobState.QUEUED: "starting", JobState.STARTING: "starting", JobState.TRAINING: "processing",
    JobState.SUCCEEDED: "succeeded", JobState.FAILED: "failed", JobState.CANCELED: "canceled",
}
PREDICTION_STATUS = {
    GenerationState.QUEUED: "starting", GenerationState.RUNNING: "processing",
    GenerationState.SUCCEEDED: "succeeded", GenerationState.FAILED: "failed", GenerationState.CANCELED: "canceled",
}
FINAL_STATUSES = ("succeeded", "failed", "canceled")
MAX_LOG_LINES = 500
TRAINING_DOWNLOADS = {"weights": "lora_file", "kohya_weights": "kohya_file", "config": "config_file"}
TRAINING_DATA = "training_data"  # the photos and captions as trained, a zip made on request


def event_logs(topic: str) -> str:
    """The object's log as text: its log lines and state messages, oldest first."""
    rows = (Event.objects.filter(topic=topic, kind__in=("log", "state")).order_by("-id")
            .values_list("kind", "data")[:MAX_LOG_LINES])
    lines = []
    for kind, data in reversed(rows):
        line = data.get("line") if kind == "log" else data.get("message")
        if line:
            lines.append(str(line))
    return "\n".join(lines)


def training_input(job: TrainingJob) -> dict[str, Any]:
    c = job.config
    return {
        "dataset": job.dataset_id, "trigger_word": job.trigger_word, "base_model": job.base_model,
        "preset": c.get("preset"), "steps": job.total_steps, "learning_rate": c.get("learning_rate"),
        "lora_rank": c.get("lora_rank"), "batch_size": c.get("batch_size"), "resolution": c.get("resolution"),
        "caption_dropout_rate": c.get("caption_dropout"), "seed": c.get("seed"),
        "sample_prompts": c.get("sample_prompts", []), "sample_every": c.get("sample_every"),
        "memory_mode": c.get("memory_mode", "fast"),
    }


def training_object(job: TrainingJob, urls: Urls) -> dict[str, Any]:
    status = TRAINING_STATUS.get(job.state, "starting")
    output = None
    if job.state == JobState.SUCCEEDED:
        output = {name: urls.api("training_download", job.pk, name) if getattr(job, field) else None
                  for name, field in TRAINING_DOWNLOADS.items()}
    # The time it ran, all runs together, without the time it sat canceled, failed or queued
    # between a stop and a resume; `started_at` stays the first start.
    predict_time = job.run_time()
    error = None
    if job.state == JobState.FAILED:
        error = job.error + (f" ({job.error_hint})" if job.error_hint else "")
    return {
        "id": job.pk,
        "name": job.name,
        "status": status,
        "parent": job.parent_id,
        "input": training_input(job),
        "output": output,
        "logs": event_logs(job.topic),
        "error": error,
        "metrics": {
            "step": job.step, "total_steps": job.total_steps, "loss": job.loss, "it_per_s": job.it_per_s,
            "eta_seconds": job.eta_seconds if status not in FINAL_STATUSES else None, "predict_time": predict_time,
        },
        # While it waits, what its page shows: its place in the queue and how many trainings run.
        "queue": job_queue.queue_state(job),
        "samples": [{"id": s.pk, "step": s.step, "prompt": s.prompt, "url": urls.api("training_sample", job.pk, s.pk)}
                    for s in job.samples.all()],
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "completed_at": iso(job.finished_at) if status in FINAL_STATUSES else None,
        "urls": {"get": urls.api("training", job.pk), "cancel": urls.api("training_cancel", job.pk),
                 "stream": urls.api("training_events", job.pk), "web": urls.path(job.get_absolute_url()),
                 "training_data": urls.api("training_download", job.pk, TRAINING_DATA)},
    }


def prediction_object(generation: Generation, urls: Urls) -> dict[str, Any]:
    status = PREDICTION_STATUS.get(generation.state, "starting")
    images = list(generation.images.all())
    predict_time = None
    if generation.finished_at and generation.started_at:
        predict_time = (generation.finished_at - generation.started_at).total_seconds()
    return {
        "id": generation.pk,
        "status": status,
        "input": {
            "prompt": generation.prompt, "base_model": generation.base_model,
            # In the request's own shape, so `input` can be posted again as it is (as on Replicate).
            "loras": [{"training" if r.get("kind") == "training" else "model": r.get("id"), "scale": r.get("scale")}
                      for r in generation.loras],
            "seed": generation.seed, "steps": generation.steps, "guidance": generation.guidance,
            "width": generation.width, "height": generation.height, "num_outputs": generation.num_images,
        },
        # Like Replicate's image models: a list of image URLs, in order, as they arrive.
        "output": [urls.api("prediction_image", generation.pk, image.index) for image in images] or None,
        "logs": event_logs(generation.topic),
        "error": generation.error or None,
        "metrics": {"step": generation.step, "predict_time": predict_time,
                    "seeds": [image.seed for image in images]},
        # While it waits, the generation page's figures: position, what is ahead, the wait estimate.
        "queue": gallery_selectors.queue_info(generation) if generation.state == GenerationState.QUEUED else None,
        "created_at": iso(generation.created_at),
        "started_at": iso(generation.started_at),
        "completed_at": iso(generation.finished_at) if status in FINAL_STATUSES else None,
        "urls": {"get": urls.api("prediction", generation.pk), "cancel": urls.api("prediction_cancel", generation.pk),
                 "stream": urls.api("prediction_events", generation.pk),
                 "web": urls.path(reverse("gallery:generation_detail", args=[generation.pk]))},
    }


def file_object(photo: Photo, urls: Urls) -> dict[str, Any]:
    return {
        "id": photo.pk,
        "name": photo.original_name,
        "content_type": f"image/{photo.format.lower()}",
        "size": photo.size_bytes,
        "checksums": {"sha256": photo.sha256},
        "dataset": photo.dataset_id,
        "width": photo.width,
        "height": photo.height,
        "caption": photo.caption,
        "caption_source": photo.caption_source,
        "excluded": photo.excluded,
        "warnings": photo.warnings,
        "created_at": iso(photo.created_at),
        "urls": {"get": urls.api("file", photo.pk), "download": urls.api("file_download", photo.pk),
                 "image": urls.api("file_download_version", photo.pk, "image"),
                 "thumbnail": urls.api("file_download_version", photo.pk, "thumbnail")},
    }


# The dataset's "captioning" events (trainer.captions) in Replicate's statuses.
CAPTIONING_STATUS = {"queued": "starting", "started": "processing", "finished": "succeeded",
                     "unavailable": "failed", "failed": "failed"}


def captioning_object(dataset: Dataset, urls: Urls) -> dict[str, Any]:
    """The dataset's latest auto-captioning run, read off its live events; status null: never run."""
    run = captioning_latest(dataset)
    data = run.data if run is not None else {}
    status = CAPTIONING_STATUS.get(run.state) if run is not None and run.state else None
    return {
        "dataset": dataset.pk,
        "status": status,
        "message": data.get("message") or None,
        "error": data.get("message") if status == "failed" else None,
        "metrics": {key: data.get(key) for key in ("total", "done", "kept", "failed")},
        "updated_at": iso(run.at) if run is not None else None,
        "urls": {"get": urls.api("dataset_captioning", dataset.pk), "dataset": urls.api("dataset", dataset.pk),
                 "stream": urls.api("dataset_events", dataset.pk)},
    }


def dataset_object(dataset: Dataset, urls: Urls, *, detail: bool = False) -> dict[str, Any]:
    """A dataset; with `detail` (GET /datasets/{id}) also its photos (File objects, oldest first),
    its health summary (what the web page warns about) and its latest auto-captioning run."""
    counts = {"photos": getattr(dataset, "photo_count", None), "training": getattr(dataset, "training_count", None),
              "captioned": getattr(dataset, "captioned_count", None)}
    if None in counts.values():  # not annotated (a freshly created or duplicated dataset)
        used = dataset.photos.filter(excluded=False)
        counts = {"photos": dataset.photos.count(), "training": used.count(), "captioned": used.exclude(caption="").count()}
    body: dict[str, Any] = {
        "id": dataset.pk,
        "name": dataset.name,
        "trigger_word": dataset.trigger_word,
        "caption_placement": dataset.caption_placement,
        "caption_prefix": dataset.caption_prefix,
        "caption_suffix": dataset.caption_suffix,
        "captioner": dataset.captioner,
        "caption_prompt": dataset.caption_prompt,
        "counts": counts,
        "created_at": iso(dataset.created_at),
        "updated_at": iso(dataset.updated_at),
        "urls": {"get": urls.api("dataset", dataset.pk), "files": urls.api("files") + f"?dataset={dataset.pk}",
                 "captioning": urls.api("dataset_captioning", dataset.pk), "stream": urls.api("dataset_events", dataset.pk),
                 "export": urls.api("dataset_export", dataset.pk), "web": urls.path(dataset.get_absolute_url())},
    }
    if detail:
        body["photos"] = [file_object(photo, urls) for photo in dataset.photos.order_by("created_at", "id")]
        body["health"] = asdict(dataset_health(dataset))
        body["captioning"] = captioning_object(dataset, urls)
    return body


def upload_object(upload: FileUpload, urls: Urls, rejected: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """One POST /files request; `urls.get` is what a training's `input_images` takes."""
    return {
        "id": upload.pk,
        "name": upload.name,
        "dataset": upload.dataset_id,
        "files": [file_object(photo, urls) for photo in upload.photos.order_by("pk")],
        "rejected": upload.rejected if rejected is None else rejected,
        "created_at": iso(upload.created_at),
        "urls": {"get": urls.api("file_upload", upload.pk)},
    }


def model_object(model: GalleryModel, urls: Urls, *, liked: bool = False, mine: bool = False) -> dict[str, Any]:
    """A gallery model; `liked`: whether the caller likes it (false for anonymous callers); `mine`:
    the caller owns it, and sees its last Hub push's status and error as the model page shows them."""
    examples = list(model.examples.all())
    return {
        "id": model.pk,
        "title": model.title,
        "description": model.description,
        "owner": model.owner.username,
        "trigger_word": model.trigger_word,
        "base_model": model.base_model,
        "license": model.license,
        "tags": model.tags,
        "published": model.published,
        "published_at": iso(model.published_at),
        "like_count": model.like_count,
        "liked": liked,
        "use_count": model.use_count,
        "training": model.training_id,
        "weights": {"url": urls.api("model_download", model.pk, "weights"), "size": model.lora_size,
                    "sha256": model.lora_sha256 or None},
        "kohya_weights": {"url": urls.api("model_download", model.pk, "kohya_weights"), "size": model.kohya_size,
                          "sha256": model.kohya_sha256 or None},
        "examples": [{"id": ex.pk, "prompt": ex.prompt, "settings": ex.settings, "is_cover": ex.is_cover,
                      "url": urls.api("model_example", model.pk, ex.pk)} for ex in examples],
        "hub": {"repo": model.hub_repo or None, "url": model.hub_url or None, "pushed_at": iso(model.hub_pushed_at),
                "status": (model.hub_state or None) if mine else None,
                "error": (model.hub_error or None) if mine and model.hub_state == HubState.FAILED else None},
        "urls": {"get": urls.api("model", model.pk), "like": urls.api("model_like", model.pk),
                 "web": urls.path(model.get_absolute_url())},
    }


def token_object(token: ApiToken, urls: Urls, *, current: bool = False) -> dict[str, Any]:
    """An API token as the token page lists it: never its secret or hash, only the first
    characters to tell tokens apart; `current`: the request was sent with this token."""
    return {
        "id": token.pk,
        "name": token.name,
        "prefix": token.prefix,
        "active": token.is_active,
        "current": current,
        "created_at": iso(token.created_at),
        "last_used_at": iso(token.last_used_at),
        "revoked_at": iso(token.revoked_at),
        "created_by": token.created_by_id,
        "urls": {"get": urls.api("token", token.pk)},
    }
