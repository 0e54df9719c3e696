"""/models: the public gallery of published LoRAs (search, read, download, like) and publishing
(details, examples and cover, a push to the Hugging Face Hub) of your own."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404

from flux_studio.api.auth import api_view
from flux_studio.api.common import Urls, check_keys, paginated_sorted, parse_id
from flux_studio.api.problems import ApiError, FieldErrors, field_error, from_validation_error, json_body
from flux_studio.api.serializers import model_object
from flux_studio.files import serve_file
from gallery import hub, selectors, services_gallery
from gallery.lora_usage import download_name
from gallery.models import GalleryModel, GenerationImage
from trainer.models import TrainingJob, TrainingSample

PUBLISH_KEYS = ("training", "title", "description", "trigger_word", "license", "tags", "examples", "published", "publish")
MAX_SAMPLES = 24  # as many as the publishing page offers
MAX_HUB_TOKEN = 400
# The API's kinds of model file: the training's file field of each (named as on the model page).
MODEL_FILES = {"weights": "lora_file", "kohya_weights": "kohya_file"}


def _object(request: HttpRequest, model: GalleryModel, urls: Urls, *, liked: bool | None = None) -> dict[str, Any]:
    """The model as the caller sees it: whether they like it and, for its owner, its Hub push."""
    if liked is None:
        liked = selectors.liked_by(request.user, model)
    return model_object(model, urls, liked=liked, mine=model.owner_id == request.user.pk)


def _visible(request: HttpRequest, pk: int) -> GalleryModel:
    model = selectors.visible_model(request.user, pk)
    if model is None:
        raise ApiError(404, "no such model (or it is not published)")
    return model


@api_view(("GET", "POST"), auth="optional")
def models(request: HttpRequest) -> HttpResponse:
    urls = Urls(request)
    if request.method == "POST":
        return _publish(request, urls)
    # A NUL is dropped from search text, as browse_models does for the rest (PostgreSQL refuses it).
    sort, base = request.GET.get("sort", "newest"), request.GET.get("base_model", "").replace("\x00", "")
    if sort not in selectors.SORTS:
        raise field_error("sort", f"one of {', '.join(selectors.SORTS)}")
    if base and base not in (bases := selectors.browse_bases()):
        raise field_error("base_model", f"one of {', '.join(bases)}")
    mine = request.GET.get("mine", "false")
    if mine not in ("true", "false"):
        raise field_error("mine", "true (your own models, drafts included) or false")
    if mine == "true" and not request.user.is_authenticated:
        raise ApiError(401, "?mine=true lists your own models: send 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})
    rows = selectors.browse_models(q=request.GET.get("q", "")[:200], base=base, tag=request.GET.get("tag", "")[:40],
                                   sort=sort, owner=request.user if mine == "true" else None).prefetch_related("examples")
    rows = selectors.with_liked(rows, request.user)
    return paginated_sorted(request, rows, lambda m: _object(request, m, urls, liked=m.liked))


@api_view(("GET",), auth="optional")
def model_filters(request: HttpRequest) -> HttpResponse:
    """What the gallery's filters offer: the bases models can be filtered by, the popular tags
    (most used first) and the sorts, as the browse page lists them."""
    check_keys(request.GET, (), where="query")
    return JsonResponse({"base_models": selectors.browse_bases(), "tags": selectors.popular_tags(),
                         "sorts": list(selectors.SORTS)})


def _text(data: dict[str, Any], key: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise field_error(key, "a string")
    return value


def _examples(request: HttpRequest, model: GalleryModel, raw: Any, field: str = "examples") -> None:
    """Add generated images as examples: [{"prediction": 7, "index": 0}]. An image that already
    is an example of the model (sent again, or twice in one list) is not added again (the service
    sees to it, for the web's pages too)."""
    if raw is None:
        return
    if not isinstance(raw, list) or len(raw) > 8:
        raise field_error(field, 'a list of up to 8 objects like {"prediction": 7, "index": 0}')
    for n, item in enumerate(raw):
        if not isinstance(item, dict):
            raise field_error(f"{field}[{n}]", 'an object like {"prediction": 7, "index": 0}')
        check_keys(item, ("prediction", "index"), where=f"{field}[{n}]")
        image = GenerationImage.objects.select_related("generation").filter(
            generation_id=parse_id(item.get("prediction"), f"{field}[{n}].prediction"),
            generation__owner=request.user, index=_index(item.get("index", 0), f"{field}[{n}].index"),
        ).first()
        if image is None:
            raise field_error(f"{field}[{n}]", "no such image among your predictions")
        services_gallery.example_add_from_generation(owner=request.user, model=model, image=image)


def _index(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise field_error(field, "the image's index in its prediction: a whole number from 0")
    return value


def _samples(model: GalleryModel, raw: Any) -> list[TrainingSample]:
    """The model's training samples with the ids given, in their order; an unknown id is an error."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw or len(raw) > MAX_SAMPLES:
        raise field_error("samples", f"a list of up to {MAX_SAMPLES} sample ids of the model's training (its `samples`)")
    ids = list(dict.fromkeys(parse_id(value, f"samples[{n}]") for n, value in enumerate(raw)))
    found = model.training.samples.in_bulk(ids)
    unknown = [pk for pk in ids if pk not in found]
    if unknown:
        raise field_error("samples", f"not samples of this model's training: {', '.join(map(str, unknown[:20]))}")
    return [found[pk] for pk in ids]


def _publish_flag(data: dict[str, Any]) -> bool:
    """`published` (the object's own field name) or the older `publish`; true when absent."""
    if "published" in data and "publish" in data:
        raise field_error("published", "give `published` or `publish`, not both")
    flag = data.get("published", data.get("publish", True))
    if not isinstance(flag, bool):
        raise field_error("published" if "published" in data else "publish", "true or false")
    return flag


def _tags(data: dict[str, Any], model: GalleryModel) -> str:
    """The tags to store: the given list (an empty one clears them), or the current ones."""
    if "tags" not in data:
        return ", ".join(model.tags)
    tags = data["tags"]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise field_error("tags", "a list of strings")
    if split := [t for t in tags if "," in t]:
        raise field_error("tags", f"a tag may not contain a comma ({split[0][:40]!r}): give each tag as its own string")
    return ", ".join(tags)


def _publish(request: HttpRequest, urls: Urls) -> JsonResponse:
    """Create or update the model of a training; `"published": false` unpublishes it. 201 when this
    request created the model, 200 when it changed (or unpublished) one that was there."""
    if not getattr(request, "api_token", None):
        raise ApiError(401, "publishing needs 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})
    data = json_body(request)
    check_keys(data, PUBLISH_KEYS, where="body")
    job = get_object_or_404(TrainingJob, pk=parse_id(data.get("training"), "training"), owner=request.user)
    publish = _publish_flag(data)
    try:
        current = (GalleryModel.objects.filter(training=job).first()
                   or services_gallery.draft_preview(owner=request.user, job=job))
        details = {"title": _text(data, "title", current.title), "description": _text(data, "description", current.description),
                   "trigger_word": _text(data, "trigger_word", current.trigger_word),
                   "license": _text(data, "license", current.license), "tags": ", ".join(current.tags)}
        # Refused details are refused before a new draft copies its first examples into storage,
        # every refused one named.
        errors = FieldErrors()
        with errors.check():
            details["tags"] = _tags(data, current)
        with errors.check():
            try:
                services_gallery.gallery_model_details(**details)
            except ValidationError as exc:
                raise from_validation_error(exc) from None
        errors.raise_if_any()
        with services_gallery.copies_undone_on_error(), transaction.atomic():
            model, created = services_gallery.draft_get_or_create(owner=request.user, job=job)
            services_gallery.gallery_model_update(model=model, **details)
            _examples(request, model, data.get("examples"))
            if publish:
                services_gallery.gallery_model_publish(model=model)
            elif model.published:
                services_gallery.gallery_model_unpublish(model=model)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    return _answer(request, model, status=201 if created else 200)


@api_view(("GET",), auth="optional")
def model(request: HttpRequest, pk: int) -> HttpResponse:
    return JsonResponse(_object(request, _visible(request, pk), Urls(request)))


@api_view(("POST", "DELETE"))
def model_like(request: HttpRequest, pk: int) -> HttpResponse:
    """POST likes a published model, DELETE takes the like back; both idempotent, as on its web page."""
    found = get_object_or_404(GalleryModel.objects.select_related("owner"), pk=pk, published=True)
    liked = request.method == "POST"
    found.like_count = services_gallery.like_set(user=request.user, model=found, liked=liked)
    return JsonResponse(_object(request, found, Urls(request), liked=liked))


@api_view(("GET",), auth="optional")
def model_download(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    found = _visible(request, pk)
    if kind not in MODEL_FILES:
        raise ApiError(404, f"no such file; one of {', '.join(MODEL_FILES)}")
    file = getattr(found.training, MODEL_FILES[kind])
    if not file:
        raise ApiError(404, f"this model has no {kind} file")
    name = download_name(title=found.title, trigger_word=found.trigger_word, field=MODEL_FILES[kind])
    return serve_file(file, download_name=name, public=found.published, request=request)


def _owned(request: HttpRequest, pk: int) -> GalleryModel:
    """The caller's own model (published or draft): anyone else's answers 404, as a missing one."""
    return get_object_or_404(GalleryModel.objects.select_related("owner", "training"), pk=pk, owner=request.user)


def _answer(request: HttpRequest, model: GalleryModel, status: int = 200) -> JsonResponse:
    model = GalleryModel.objects.select_related("owner").get(pk=model.pk)
    return JsonResponse(_object(request, model, Urls(request)), status=status)


@api_view(("POST",))
def model_examples(request: HttpRequest, pk: int) -> HttpResponse:
    """The publishing page's "add examples": training `samples` (ids from the training's
    `samples`) and generated `images` ([{"prediction": 7, "index": 0}]); ones already there are skipped."""
    found = _owned(request, pk)
    data = json_body(request)
    check_keys(data, ("samples", "images"), where="body")
    if data.get("samples") is None and data.get("images") is None:
        raise ApiError(422, "nothing to add; give `samples` and/or `images`")
    samples = _samples(found, data.get("samples"))
    with services_gallery.copies_undone_on_error(), transaction.atomic():
        services_gallery.examples_add_samples(model=found, samples=samples)
        _examples(request, found, data.get("images"), field="images")
    return _answer(request, found, status=201)


@api_view(("GET", "PATCH", "DELETE"), auth="optional")
def model_example(request: HttpRequest, pk: int, example_pk: int) -> HttpResponse:
    """GET: the example's image. The owner's PATCH {"is_cover": true} makes it the cover, and
    DELETE removes it (the next example becomes the cover), as on the publishing page."""
    if request.method == "GET":
        found = _visible(request, pk)
        example = get_object_or_404(found.examples, pk=example_pk)
        return serve_file(example.image, public=found.published, request=request)
    found = _owned(request, pk)
    example = get_object_or_404(found.examples, pk=example_pk)
    if request.method == "DELETE":
        services_gallery.example_remove(example=example)
        return HttpResponse(status=204)
    data = json_body(request)
    check_keys(data, ("is_cover",), where="body")
    if data.get("is_cover") is not True:
        raise field_error("is_cover", "true (to change the cover, make another example the cover)")
    services_gallery.example_set_cover(example=example)
    return _answer(request, found)


@api_view(("POST",))
def model_hub_push(request: HttpRequest, pk: int) -> HttpResponse:
    """Push your published model to the Hugging Face Hub with your own write `token` (used once by
    the worker, never stored), as the model page's form; 202, then poll the model's `hub`."""
    found = _owned(request, pk)
    data = json_body(request)
    check_keys(data, ("repo_id", "token", "private"), where="body")
    private = data.get("private", False)
    if not isinstance(private, bool):
        raise field_error("private", "true or false")
    token = _text(data, "token", "")
    if len(token) > MAX_HUB_TOKEN:
        raise field_error("token", f"at most {MAX_HUB_TOKEN} characters")
    try:
        hub.hub_push_request(user=request.user, model=found, repo_id=_text(data, "repo_id", ""), token=token,
                             private=private)
    except hub.PushUnderWay as exc:
        raise ApiError(409, " ".join(exc.messages)) from None
    answer = _answer(request, found, status=202)
    answer["Location"] = Urls(request).api("model", found.pk)
    return answer
