"""/trainings: launch, list, read, cancel, resume, continue and delete LoRA trainings (TrainingJob rows).

The training's id is the studio's job id, so the web page (urls.web) and the API show the same
thing, and trainings launched in the browser are listed here too.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404

from flux_studio.api.auth import api_view
from flux_studio.api.common import Urls, check_keys, number, paginated, public_base_url, status_filtered
from flux_studio.api.problems import ApiError, FieldErrors, field_error, from_validation_error, json_body, json_object
from flux_studio.api.serializers import TRAINING_DATA, TRAINING_DOWNLOADS, TRAINING_STATUS, training_object
from flux_studio.api.streams import event_stream
from flux_studio.api.training_input import (
    AUTOCAPTION_KEYS, TrainingSource, apply_style, autocaption_flag, dataset_for_training, discard, training_source,
)
from flux_studio.api.webhooks import parse_webhook, webhook_register, webhooks_rearm
from flux_studio.files import serve_file
from trainer import jobs, selectors
from trainer.models import FINAL_STATES, Dataset, JobState, TrainingJob
from trainer.presets import LIMITS, MEMORY_MODES, PRESETS, estimate_seconds, preset_settings, preset_summary

INPUT_KEYS = (
    "dataset", "files", "input_images", "trigger_word", "preset", "base_model", "name", "steps", "learning_rate", "lora_rank",
    "batch_size", "resolution", "caption_dropout_rate", "seed", "sample_prompts", "sample_every", "memory_mode", *AUTOCAPTION_KEYS,
)
# API input name -> (service setting name, type)
SETTINGS = {
    "steps": ("steps", int), "learning_rate": ("learning_rate", float), "lora_rank": ("lora_rank", int),
    "batch_size": ("batch_size", int), "seed": ("seed", int),
    "caption_dropout_rate": ("caption_dropout", float), "sample_every": ("sample_every", int),
}

# Service field names -> API input names, so errors point at what the caller sent.
FIELD_MAP = {**{setting: f"input.{key}" for key, (setting, _) in SETTINGS.items()},
             **{key: f"input.{key}" for key in INPUT_KEYS}, "settings": "input"}


def _own_job(request: HttpRequest, pk: int) -> TrainingJob:
    return get_object_or_404(TrainingJob, pk=pk, owner=request.user)


def _overrides(data: dict[str, Any]) -> dict[str, Any]:
    """The settings as the service takes them; every bad one is reported, not just the first."""
    values, errors = {}, FieldErrors()
    for key, (setting, kind) in SETTINGS.items():
        low, high = LIMITS[setting]
        with errors.check():
            value = number(data, key, kind, low=low, high=high, field=f"input.{key}")
            if value is not None:
                values[setting] = value
    if data.get("resolution") is not None:
        with errors.check():
            values["resolution"] = _resolution(data["resolution"])
    mode = data.get("memory_mode")
    if mode is not None:
        with errors.check():
            if not isinstance(mode, str) or mode not in MEMORY_MODES:
                raise field_error("input.memory_mode", f"one of {', '.join(MEMORY_MODES)}")
            values["memory_mode"] = mode
    errors.raise_if_any()
    return values


def _resolution(value: Any) -> Any:
    """The JSON types the API documents: a number or a non-empty list of numbers, never text;
    then the web form's own checks (jobs.clean_resolution: sizes, multiples of 16, how many), here,
    so a bad resolution is named with the other bad settings."""
    numbers = value if isinstance(value, list) else [value]
    if not numbers or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise field_error("input.resolution", "a whole number of pixels or a list of them, e.g. 1024 or [512, 768, 1024]")
    try:
        jobs.clean_resolution(value)
    except ValueError as exc:
        raise field_error("input.resolution", str(exc)) from None
    return value


def _launch_options(data: dict[str, Any]) -> dict[str, Any]:
    errors = FieldErrors()
    preset = data.get("preset", "balanced")
    base = data.get("base_model") or settings.DEFAULT_BASE_MODEL
    prompts = data.get("sample_prompts")
    name = data.get("name", "")
    with errors.check():
        if not isinstance(preset, str) or preset not in PRESETS:
            raise field_error("input.preset", f"one of {', '.join(PRESETS)}")
    with errors.check():
        if not isinstance(base, str) or base not in settings.BASE_MODELS:
            raise field_error("input.base_model", f"one of {', '.join(settings.BASE_MODELS)}")
    with errors.check():
        if prompts is not None and (not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts)):
            raise field_error("input.sample_prompts", "a list of strings")
    with errors.check():
        if not isinstance(name, str) or len(name) > 120:
            raise field_error("input.name", "a string of at most 120 characters")
    errors.raise_if_any()
    return {"preset": preset, "base_model": base, "sample_prompts": prompts, "name": name.strip()}


def _multipart_body(request: HttpRequest) -> tuple[dict[str, Any], list[UploadedFile]]:
    """A multipart create: `input` (the JSON input), optional `webhook` and
    `webhook_events_filter` (JSON list) fields, and `input_images` file parts (a zip or images)."""
    check_keys(request.POST, ("input", "webhook", "webhook_events_filter"), where="form")
    check_keys(request.FILES, ("input_images",), where="file part")
    body: dict[str, Any] = {"input": json_object(request.POST.get("input") or "{}", "the `input` field")}
    if "webhook" in request.POST:
        body["webhook"] = request.POST["webhook"]
    if "webhook_events_filter" in request.POST:
        body["webhook_events_filter"] = _events_field(request.POST["webhook_events_filter"].strip())
    uploads = request.FILES.getlist("input_images")
    if not uploads:
        raise field_error("input_images", "attach the zip (or images) as `input_images` file parts")
    return body, uploads


def _events_field(raw: str) -> Any:
    """"start,completed" (easy with curl -F) or a JSON list; parse_webhook checks the names."""
    if not raw.startswith("["):
        return [event.strip() for event in raw.split(",") if event.strip()]
    try:
        return json.loads(raw)
    except ValueError:
        raise field_error("webhook_events_filter", "a JSON list or comma-separated event names") from None


def _request_body(request: HttpRequest) -> tuple[dict[str, Any], list[UploadedFile]]:
    if (request.content_type or "").startswith("multipart/form-data"):
        return _multipart_body(request)
    return json_body(request), []


def _hosts(request: HttpRequest) -> set[str]:
    """Host names under which this studio's own URLs may arrive in `input_images`."""
    return {request.get_host().lower(), urlsplit(public_base_url()).netloc.lower()}


def _create(request: HttpRequest, urls: Urls) -> JsonResponse:
    body, uploads = _request_body(request)
    check_keys(body, ("input", "webhook", "webhook_events_filter"), where="body")
    data = body.get("input")
    if not isinstance(data, dict):
        raise field_error("input", "an object with the training settings (see /api/v1/docs/)")
    check_keys(data, INPUT_KEYS)
    hook = parse_webhook(body)
    errors = FieldErrors()  # every bad field at once
    options: dict[str, Any] | None = None
    overrides: dict[str, Any] | None = None
    source: TrainingSource | None = None
    with errors.check():
        options = _launch_options(data)
    with errors.check():
        overrides = _overrides(data)
    with errors.check():
        autocaption = autocaption_flag(data)
    with errors.check():
        source = training_source(owner=request.user, data=data, uploads=uploads, hosts=_hosts(request))
    if source is not None:
        with errors.check():
            try:  # everything that needs no photo, before any is stored: a refusal leaves nothing behind
                if options is not None and overrides is not None:
                    jobs.launch_check(trigger=source.trigger, preset=options["preset"], base_model=options["base_model"],
                                      overrides=overrides, sample_prompts=options["sample_prompts"])
                else:  # the settings are refused already: the trigger word still gets its say
                    jobs.launch_check(trigger=source.trigger)
            except ValidationError as exc:
                raise from_validation_error(exc, field_map=FIELD_MAP) from None
    errors.raise_if_any()
    # Outside any transaction: each photo commits on its own, so a 200-photo ingest never holds
    # the database's write lock (on SQLite a running training's progress write would wait on it).
    dataset, rejected = dataset_for_training(source)
    try:
        job = _launch(request, dataset, source, hook, options=options, overrides=overrides, autocaption=autocaption)
    except BaseException:
        discard(dataset, source)  # a refused launch leaves no copied dataset, nor its files
        raise
    answer = training_object(job, urls)
    if uploads:
        answer["rejected_files"] = rejected  # files of the request that did not pass the photo checks
    return JsonResponse(answer, status=201)


def _launch(request: HttpRequest, dataset: Dataset, source: TrainingSource, hook: dict[str, Any] | None, *,
            options: dict[str, Any], overrides: dict[str, Any], autocaption: bool) -> TrainingJob:
    """The job (and its webhook) in one short transaction, with the input's trigger and caption style."""
    with transaction.atomic():
        apply_style(dataset, source)
        try:
            job = jobs.job_create(owner=request.user, dataset=dataset, overrides=overrides, autocaption=autocaption, **options)
        except ValidationError as exc:
            raise from_validation_error(exc, field_map=FIELD_MAP) from None
        if hook:
            webhook_register(owner=request.user, kind="training", object_id=job.pk, **hook)
    return job


@api_view(("GET", "POST"))
def trainings(request: HttpRequest) -> HttpResponse:
    urls = Urls(request)
    if request.method == "POST":
        return _create(request, urls)
    rows = status_filtered(request, TrainingJob.objects.filter(owner=request.user), TRAINING_STATUS)
    return paginated(request, rows.prefetch_related("samples"), lambda job: training_object(job, urls))


@api_view(("GET", "DELETE"))
def training(request: HttpRequest, pk: int) -> HttpResponse:
    job = _own_job(request, pk)
    if request.method == "DELETE":
        try:
            jobs.job_delete(job=job)
        except ValidationError as exc:
            raise _state_error(exc) from None
        return HttpResponse(status=204)
    return JsonResponse(training_object(job, Urls(request)))


@api_view(("GET",))
def training_events(request: HttpRequest, pk: int) -> HttpResponse:
    """The training's events as Server-Sent Events, stored then live (flux_studio.api.streams)."""
    job = _own_job(request, pk)
    return event_stream(request, job.topic, final_states=FINAL_STATES, final_now=job.state in FINAL_STATES,
                        statuses=TRAINING_STATUS)


def _state_error(exc: ValidationError) -> ApiError:
    """A service's refusal: about a field, a 422; about the training's state (it changed
    meanwhile), a 409."""
    return from_validation_error(exc) if hasattr(exc, "error_dict") else ApiError(409, " ".join(exc.messages))


@api_view(("POST",))
def training_resume(request: HttpRequest, pk: int) -> HttpResponse:
    """Resume a canceled or failed training from its last checkpoint (the same training, its step
    count goes on), optionally in low memory mode (after running out of GPU memory)."""
    job = _own_job(request, pk)
    data = json_body(request)
    check_keys(data, ("memory_mode",), where="body")
    mode = data.get("memory_mode")
    if mode is not None and (not isinstance(mode, str) or mode not in MEMORY_MODES):
        raise field_error("memory_mode", f"one of {', '.join(MEMORY_MODES)}")
    if job.state not in (JobState.CANCELED, JobState.FAILED):
        raise ApiError(409, f"only a canceled or failed training can be resumed; this one is {TRAINING_STATUS[job.state]}")
    with transaction.atomic():
        webhooks_rearm(kind="training", object_id=job.pk)  # its webhooks hear this run's start and end
        try:
            jobs.job_resume(job=job, memory_mode=mode)
        except ValidationError as exc:
            raise _state_error(exc) from None
    job.refresh_from_db()
    return JsonResponse(training_object(job, Urls(request)))


@api_view(("POST",))
def training_continue(request: HttpRequest, pk: int) -> HttpResponse:
    """Train a succeeded LoRA `steps` further: a new training that starts from its weights."""
    job = _own_job(request, pk)
    body = json_body(request)
    check_keys(body, ("steps", "webhook", "webhook_events_filter"), where="body")
    low, high = LIMITS["steps"]
    steps = number(body, "steps", int, low=low, high=high)
    if steps is None:
        raise field_error("steps", f"how many more steps to train, {low} to {high}")
    hook = parse_webhook(body)
    if job.state != JobState.SUCCEEDED or not job.lora_file:
        raise ApiError(409, "only a succeeded training with its LoRA file can be continued")
    with transaction.atomic():
        try:
            child = jobs.job_continue(job=job, extra_steps=steps)
        except ValidationError as exc:
            raise _state_error(exc) from None
        if hook:
            webhook_register(owner=request.user, kind="training", object_id=child.pk, **hook)
    return JsonResponse(training_object(child, Urls(request)), status=201)


@api_view(("POST",))
def training_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = _own_job(request, pk)
    jobs.job_cancel(job=job)  # a finished job stays as it is; the object says so
    job.refresh_from_db()
    return JsonResponse(training_object(job, Urls(request)))


@api_view(("GET",))
def training_download(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    job = _own_job(request, pk)
    if kind == TRAINING_DATA:
        return selectors.training_data_response(job)
    field = TRAINING_DOWNLOADS.get(kind)
    if field is None or not getattr(job, field):
        kinds = ", ".join([*TRAINING_DOWNLOADS, TRAINING_DATA])
        raise ApiError(404, f"this training has no {kind!r} file" + ("" if field else f"; one of {kinds}"))
    return serve_file(getattr(job, field), download_name=selectors.download_name(job, field), request=request)


@api_view(("GET",))
def training_sample(request: HttpRequest, pk: int, sample_pk: int) -> HttpResponse:
    job = _own_job(request, pk)
    return serve_file(get_object_or_404(job.samples, pk=sample_pk).image, request=request)


@api_view(("GET",))
def presets(request: HttpRequest) -> HttpResponse:
    """What the launch page shows before launch: the bases offered, the memory modes, and each
    preset's settings on a base with its explanation and time estimate per memory mode, for a
    dataset of `photos` photos (the estimate counts encoding each once)."""
    check_keys(request.GET, ("base_model", "photos"), where="query")
    base = request.GET.get("base_model") or settings.DEFAULT_BASE_MODEL
    if base not in settings.BASE_MODELS:
        raise field_error("base_model", f"one of {', '.join(settings.BASE_MODELS)}")
    raw = request.GET.get("photos", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= settings.MAX_PHOTOS_PER_DATASET:
        raise field_error("photos", f"a whole number from 1 to {settings.MAX_PHOTOS_PER_DATASET}")
    photos = int(raw)
    rows = []
    for key, preset in PRESETS.items():
        values = preset_settings(key, base)
        rows.append({
            "key": key, "label": preset.label, "explanation": preset_summary(key, base, photos)["explanation"],
            "settings": {name: values[name] for name in ("steps", "learning_rate", "lora_rank", "batch_size", "resolution",
                                                         "sample_every", "memory_mode")},
            "estimated_seconds": {mode: estimate_seconds({**values, "memory_mode": mode}, base, photos)
                                  for mode in MEMORY_MODES},
        })
    return JsonResponse({"base_model": base, "base_models": list(settings.BASE_MODELS), "default_preset": "balanced",
                         "memory_modes": dict(MEMORY_MODES), "photos": photos, "presets": rows})
