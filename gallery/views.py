"""Community gallery pages: browse, model page, downloads, likes, images, publishing.

Anyone may browse and download published models; drafts are visible only to their owner, and
so are their files (every file goes through `visible_model` before `serve_file`).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from flux_studio.files import serve_file
from gallery import example_settings, hub, lora_usage, selectors, services_gallery
from gallery.models import GalleryExample, GalleryModel, GenerationImage, HubState

PAGE_SIZE = 24
# The model page's kinds of download: the training's file field of each.
DOWNLOADS = {"diffusers": "lora_file", "kohya": "kohya_file"}


def browse(request: HttpRequest) -> HttpResponse:
    q, base, tag, sort = (request.GET.get(k, "").strip()[:100] for k in ("q", "base", "tag", "sort"))
    bases, tags = selectors.browse_bases(), selectors.popular_tags()
    # A filter no model could match (a base never offered, a tag no one could have written) is
    # not applied, nor offered as a choice: an edited or stale link shows the whole gallery.
    base = base if base in bases else ""
    tag = tag if services_gallery.TAG_RE.match(" ".join(tag.lower().split())) else ""
    models = selectors.browse_models(q=q, base=base, tag=tag, sort=sort or "newest")
    page = Paginator(models, PAGE_SIZE).get_page(request.GET.get("page"))
    keep = urlencode({k: v for k, v in (("q", q), ("base", base), ("tag", tag), ("sort", sort)) if v})
    # A tag in force is always an option, selected: a model page's tag link can name a tag outside
    # the popular ones, and a select showing "All" would hide the filter and drop it on Apply.
    return render(request, "gallery/browse.html", {
        "page": page, "q": q, "base": base, "tag": tag, "sort": sort or "newest", "keep": keep,
        "bases": bases, "tags": _with_current(tags, tag), "area": "gallery",
    })


def _with_current(options: list[str], current: str) -> list[str]:
    return options if not current or current in options else [current, *options]


def _visible_or_404(request: HttpRequest, pk: int) -> GalleryModel:
    model = selectors.visible_model(request.user, pk)
    if model is None:
        raise Http404("no such model")
    return model


def _try_url(model: GalleryModel, example: GalleryExample | None = None) -> str:
    """The generation page with the model's LoRA; for an example, its prompt and the settings it was
    really made with (a sample's own seed; none where it is unknown, so the page draws one)."""
    params: dict[str, object] = {"model": model.pk}
    if example is not None:
        params["prompt"] = example.prompt
        s = example_settings.shown_settings(example)
        for key in ("seed", "steps", "guidance"):
            if s.get(key) is not None:
                params[key] = s[key]
        if s.get("width") and s.get("height"):
            params["size"] = f"{s['width']}x{s['height']}"
    return reverse("gallery:generate") + "?" + urlencode(params)


def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    model = _visible_or_404(request, pk)
    examples = list(model.examples.all())
    job = model.training
    downloads = [
        {"kind": "diffusers", "label": "diffusers (.safetensors)", "size": model.lora_size, "sha256": model.lora_sha256},
        {"kind": "kohya", "label": "kohya / ComfyUI (.safetensors)", "size": model.kohya_size, "sha256": model.kohya_sha256},
    ]
    downloads = [d for d in downloads if getattr(job, DOWNLOADS[d["kind"]])]
    liked = selectors.liked_by(request.user, model)
    recipe = lora_usage.loading_recipe(base_model=model.base_model, trigger_word=model.trigger_word,
                                       weight_name=_download_name(model, "diffusers"))
    return render(request, "gallery/model_detail.html", {
        "model": model,
        "examples": [(e, " · ".join(example_settings.settings_words(example_settings.shown_settings(e))), _try_url(model, e))
                     for e in examples], "summary": selectors.training_summary(job),
        "downloads": downloads, "liked": liked, "try_url": _try_url(model), "is_owner": model.owner_id == request.user.pk,
        "others": selectors.other_models_of(model), "area": "gallery", "recipe": recipe,
        "hub_pushing": model.hub_state == HubState.PUSHING, "hub_default_repo": slugify(model.title)[:90] or "flux-lora",
    })


def _download_name(model: GalleryModel, kind: str) -> str:
    """The downloaded file's name, as the API names it too; the page's loading recipe names it."""
    return lora_usage.download_name(title=model.title, trigger_word=model.trigger_word, field=DOWNLOADS[kind])


def model_download(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    model = _visible_or_404(request, pk)
    if kind not in DOWNLOADS:
        raise Http404("unknown format")
    field = getattr(model.training, DOWNLOADS[kind])
    if not field:
        raise Http404("this model has no file in that format")
    return serve_file(field, download_name=_download_name(model, kind), public=model.published, request=request)


def example_image(request: HttpRequest, pk: int) -> HttpResponse:
    example = get_object_or_404(GalleryExample.objects.select_related("gallery_model"), pk=pk)
    model = _visible_or_404(request, example.gallery_model_id)
    field = example.thumbnail if request.GET.get("size") == "thumb" and example.thumbnail else example.image
    return serve_file(field, public=model.published, request=request)


@require_POST
def model_like(request: HttpRequest, pk: int) -> HttpResponse:
    wants_json = request.headers.get("Accept", "").startswith("application/json")
    if not request.user.is_authenticated:
        login = f"{reverse('login')}?{urlencode({'next': reverse('gallery:model_detail', args=[pk])})}"
        if wants_json:  # the page's script: a redirect would be followed to the login form's HTML
            return JsonResponse({"error": "log in to like models", "login_url": login}, status=401)
        return redirect(login)
    model = get_object_or_404(GalleryModel, pk=pk, published=True)
    count = services_gallery.like_set(user=request.user, model=model, liked=request.POST.get("like", "1") == "1")
    if wants_json:
        return JsonResponse({"likes": count, "liked": request.POST.get("like", "1") == "1"})
    return redirect(model)


@login_required
@require_POST
def example_add(request: HttpRequest) -> HttpResponse:
    """"Add to my model's examples" from a generated image."""
    image = get_object_or_404(GenerationImage.objects.select_related("generation"), pk=request.POST.get("image") or 0,
                              generation__owner=request.user)
    model = get_object_or_404(GalleryModel, pk=request.POST.get("gallery_model") or 0, owner=request.user)
    try:
        with services_gallery.copies_undone_on_error():
            services_gallery.example_add_from_generation(owner=request.user, model=model, image=image)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("gallery:generation_detail", image.generation_id)
    messages.success(request, f"Added to the examples of {model.title}.")
    return redirect("gallery:publish", model.training_id)


@login_required
@require_POST
def model_hub_push(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner pushes a published model to the Hugging Face Hub; a light worker does it."""
    model = get_object_or_404(GalleryModel, pk=pk, owner=request.user)
    try:
        hub.hub_push_request(user=request.user, model=model, repo_id=request.POST.get("repo_id", ""),
                             token=request.POST.get("token", ""), private=request.POST.get("private") == "on")
    except ValidationError as exc:
        messages.error(request, "; ".join(" ".join(v) for v in exc.message_dict.values()))
    else:
        messages.success(request, "Pushing to the Hugging Face Hub: the status below updates when it is done.")
    return redirect(model)
