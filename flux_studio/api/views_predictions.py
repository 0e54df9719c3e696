"""/predictions: generate images with LoRAs (Generation rows), list, read, cancel, delete, download.

`Prefer: wait=n` (n <= 60) holds a create request until the prediction finishes or n seconds
pass, like Replicate's synchronous mode; the object answered is whatever state it reached.
"""

from __future__ import annotations

import re
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404

from flux_studio.api.auth import api_view
from flux_studio.api.common import Urls, check_keys, number, paginated, parse_id, status_filtered
from flux_studio.api.problems import ApiError, field_error, from_validation_error, json_body
from flux_studio.api.serializers import PREDICTION_STATUS, prediction_object
from flux_studio.api.streams import event_stream
from flux_studio.api.webhooks import parse_webhook, webhook_register
from flux_studio.files import serve_file
from gallery import services
from gallery.defaults import LIMITS, defaults_for
from gallery.models import Generation, GenerationState

INPUT_KEYS = ("prompt", "loras", "seed", "steps", "guidance", "width", "height", "num_outputs", "base_model")
MAX_WAIT_S = 60
WAIT_POLL_S = 0.25
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait(?:=(\d+))?(?:$|[,;\s])")
FIELD_MAP = {"num_images": "input.num_outputs", "size": "input.width", **{k: f"input.{k}" for k in INPUT_KEYS}}


def _loras(raw: Any) -> list[services.LoraChoice]:
    """[{"training": 3, "scale": 0.8}] or [{"model": 5}] (a published gallery model)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise field_error("input.loras", 'a list like [{"training": 12, "scale": 1.0}] or [{"model": 5}]')
    choices = []
    for index, item in enumerate(raw):
        where = f"input.loras[{index}]"
        if not isinstance(item, dict) or len({"training", "model"} & set(item)) != 1:
            raise field_error(where, 'an object with exactly one of "training" (your training id) or "model" (a gallery model id)')
        check_keys(item, ("training", "model", "scale"), where=where)
        kind = "training" if "training" in item else "gallery"
        pk = parse_id(item.get("training", item.get("model")), where)
        low, high = LIMITS["scale"]
        scale = number(item, "scale", float, low=low, high=high, field=f"{where}.scale")
        choices.append(services.LoraChoice(kind=kind, id=pk, scale=1.0 if scale is None else scale))
    return choices


def _generation_args(data: dict[str, Any]) -> dict[str, Any]:
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise field_error("input.prompt", "a non-empty string")
    base = data.get("base_model") or settings.DEFAULT_BASE_MODEL
    if not isinstance(base, str) or base not in settings.BASE_MODELS:
        raise field_error("input.base_model", f"one of {', '.join(settings.BASE_MODELS)}")
    defaults = defaults_for(base)

    def pick(key: str, kind: type, limit: tuple[float, float], default: Any) -> Any:
        value = number(data, key, kind, low=limit[0], high=limit[1], field=f"input.{key}")
        return default if value is None else value

    return {
        "prompt": prompt, "base_model": base, "loras": _loras(data.get("loras")),
        "seed": number(data, "seed", int, low=LIMITS["seed"][0], high=LIMITS["seed"][1], field="input.seed"),
        "steps": pick("steps", int, LIMITS["steps"], defaults.steps),
        "guidance": pick("guidance", float, LIMITS["guidance"], defaults.guidance),
        "width": pick("width", int, (16, 2048), defaults.width),
        "height": pick("height", int, (16, 2048), defaults.height),
        "num_images": pick("num_outputs", int, LIMITS["num_images"], 1),
    }


def prefer_wait(request: HttpRequest) -> float:
    match = _PREFER_WAIT.search(request.headers.get("Prefer", ""))
    if not match:
        return 0.0
    return float(min(MAX_WAIT_S, int(match.group(1)) if match.group(1) else MAX_WAIT_S))


def _wait(generation: Generation, seconds: float) -> Generation:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        generation.refresh_from_db()
        if generation.state in ("succeeded", "failed", "canceled"):
            break
        time.sleep(WAIT_POLL_S)
    return generation


def _create(request: HttpRequest, urls: Urls) -> JsonResponse:
    body = json_body(request)
    check_keys(body, ("input", "webhook", "webhook_events_filter"), where="body")
    data = body.get("input")
    if not isinstance(data, dict):
        raise field_error("input", "an object with at least a prompt")
    check_keys(data, INPUT_KEYS)
    hook = parse_webhook(body)
    args = _generation_args(data)
    with transaction.atomic():
        try:
            generation = services.generation_create(owner=request.user, **args)
        except ValidationError as exc:
            raise from_validation_error(exc, field_map=FIELD_MAP) from None
        if hook:
            webhook_register(owner=request.user, kind="prediction", object_id=generation.pk, **hook)
    wait = prefer_wait(request)
    if wait:
        generation = _wait(generation, wait)
    response = JsonResponse(prediction_object(generation, urls), status=201)
    if wait:
        response["Preference-Applied"] = f"wait={int(wait)}"
    return response


def _own(request: HttpRequest, pk: int) -> Generation:
    return get_object_or_404(Generation.objects.prefetch_related("images"), pk=pk, owner=request.user)


@api_view(("GET", "POST"))
def predictions(request: HttpRequest) -> HttpResponse:
    urls = Urls(request)
    if request.method == "POST":
        return _create(request, urls)
    rows = status_filtered(request, Generation.objects.filter(owner=request.user), PREDICTION_STATUS)
    return paginated(request, rows.prefetch_related("images"), lambda g: prediction_object(g, urls))


@api_view(("GET", "DELETE"))
def prediction(request: HttpRequest, pk: int) -> HttpResponse:
    generation = _own(request, pk)
    if request.method == "DELETE":
        # As the web's delete: a waiting one is canceled and deleted; a processing one is a 409, as
        # for trainings. Gallery examples made from it keep their copies.
        try:
            services.generation_delete(generation=generation)
        except ValidationError:
            raise ApiError(409, "this prediction is still processing: cancel it first, then delete it once it "
                                "has stopped") from None
        return HttpResponse(status=204)
    return JsonResponse(prediction_object(generation, Urls(request)))


FINAL_STATES = (GenerationState.SUCCEEDED, GenerationState.FAILED, GenerationState.CANCELED)


@api_view(("GET",))
def prediction_events(request: HttpRequest, pk: int) -> HttpResponse:
    """The prediction's events as Server-Sent Events, stored then live (flux_studio.api.streams)."""
    generation = _own(request, pk)
    return event_stream(request, generation.topic, final_states=FINAL_STATES,
                        final_now=generation.state in FINAL_STATES, statuses=PREDICTION_STATUS)


@api_view(("POST",))
def prediction_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    generation = _own(request, pk)
    services.generation_cancel(generation=generation)
    return JsonResponse(prediction_object(_own(request, pk), Urls(request)))


@api_view(("GET",))
def prediction_image(request: HttpRequest, pk: int, index: int) -> HttpResponse:
    image = get_object_or_404(_own(request, pk).images, index=index)
    return serve_file(image.image, download_name=f"prediction_{pk}_{index}.png", request=request)


