"""Generation pages: the form, a generation's live page, history, images, cancel, delete.

Views validate and enqueue (through services); the GPU work happens in the worker.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from flux_studio.files import serve_file
from gallery import selectors, services
from gallery.defaults import defaults_for
from gallery.forms import GenerationForm
from gallery.generation_run import image_payload
from gallery.models import Generation, GenerationState


def _initial_from_generation(request: HttpRequest, g: Generation, *, same_seed: bool = True
                             ) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """The form as `g` was asked for, less any LoRA that can no longer be used (deleted, unpublished
    or failed since): the person is told, rather than finding the LoRA row quietly empty.
    `same_seed`: fix the seed `g` used (to make it again); otherwise a random seed stays Random."""
    fixed = same_seed or not g.seed_random
    initial = {"prompt": g.prompt, "base_model": g.base_model, "seed_mode": "fixed" if fixed else "random",
               "seed": g.seed if fixed else None, "steps": g.steps,
               "guidance": g.guidance, "size": f"{g.width}x{g.height}", "num_images": g.num_images}
    gone = [row for row in g.loras if selectors.usable_lora(request.user, row["kind"], row["id"]) is None]
    if gone:
        names = ", ".join(str(row.get("label") or f"{row['kind']} {row['id']}") for row in gone)
        messages.warning(request, f"Left out, as it can no longer be used (deleted or unpublished): {names}. "
                                  "The other settings are as they were.")
    return initial, [(f"{row['kind']}:{row['id']}", row["scale"]) for row in g.loras if row not in gone]


def _initial(request: HttpRequest) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """Start values: a past generation (?from=), a LoRA (?training= / ?model=), then explicit ?prompt= etc."""
    q = request.GET
    base, prompt, refs = settings.DEFAULT_BASE_MODEL, "", []
    initial: dict[str, Any] = {}
    if q.get("from", "").isdigit():
        g = selectors.generation_of(request.user, int(q["from"]))
        if g is not None:
            initial, refs = _initial_from_generation(request, g)
            base, prompt = g.base_model, g.prompt
    for kind in ("training", "model"):
        if q.get(kind, "").isdigit() and not refs:
            found = selectors.usable_lora(request.user, "training" if kind == "training" else "gallery", int(q[kind]))
            if found is not None:
                job, model = found
                refs = [(f"gallery:{model.pk}" if model and model.owner_id != request.user.pk else f"training:{job.pk}", 1.0)]
                base = job.base_model
                prompt = f"a photo of {model.trigger_word if model else job.trigger_word}"
    if q.get("base") in settings.BASE_MODELS:
        base = q["base"]
    d = defaults_for(base)
    values = {"prompt": prompt, "base_model": base, "seed_mode": "random", "seed": None, "steps": d.steps,
              "guidance": d.guidance, "size": f"{d.width}x{d.height}", "num_images": 1, **initial}
    for key in ("prompt", "steps", "guidance", "size", "num_images"):
        if q.get(key):
            values[key] = q[key]
    if q.get("seed", "").isdigit():
        values.update(seed=int(q["seed"]), seed_mode="fixed")
    return values, refs


def _page(request: HttpRequest, form: GenerationForm, refs: list[tuple[str, float]], generation: Generation | None = None,
          status: int = 200) -> HttpResponse:
    bases = {b: {**asdict(defaults_for(b)), "sizes": [{"value": s.value, "label": s.label} for s in defaults_for(b).sizes]}
             for b in settings.BASE_MODELS}
    options = [asdict(o) for o in selectors.lora_options(request.user)]
    rows = [{"ref": ref, "scale": scale} for ref, scale in refs] or [{"ref": "", "scale": 1.0}]
    context = {
        "form": form, "bases": bases, "lora_options": options, "lora_rows": rows, "area": "generate",
        # The others: on a generation's own page, a list holding only itself would be an empty heading.
        "generation": generation, "recent": selectors.generations_of(request.user).exclude(
            pk=generation.pk if generation else None)[:6],
    }
    if generation is not None:
        context["images"] = [image_payload(i) for i in generation.images.all()]
        context["is_final"] = generation.state not in (GenerationState.QUEUED, GenerationState.RUNNING)
        if generation.state == GenerationState.QUEUED:
            context["queue"] = selectors.queue_info(generation)
        # Only the person's models whose LoRA made these images: examples show what a LoRA does.
        context["gallery_models"] = list(request.user.gallery_models.filter(
            training_id__in=[row.get("training_id") for row in generation.loras]))
    return render(request, "gallery/generate.html", context, status=status)


@login_required
def generate(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = GenerationForm(request.POST)
        refs = list(zip(request.POST.getlist("lora"), request.POST.getlist("lora_scale")))
        if form.is_valid():
            try:
                generation = services.generation_create(owner=request.user, **form.service_kwargs())
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                return redirect("gallery:generation_detail", generation.pk)
        return _page(request, form, [(r, s) for r, s in refs if r], status=400)
    values, refs = _initial(request)
    return _page(request, GenerationForm(initial=values), refs)


@login_required
def generation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    generation = selectors.generation_of(request.user, pk)
    if generation is None:
        raise Http404("no such generation")
    # The page a Generate leads to: the next Generate draws a new seed if this one drew one.
    values, refs = _initial_from_generation(request, generation, same_seed=False)
    return _page(request, GenerationForm(initial=values), refs, generation=generation)


@login_required
def generation_queue(request: HttpRequest, pk: int) -> JsonResponse:
    """Where a queued generation stands now: the page refreshes its wait estimate from this
    while it waits (a running training's progress is in the database, not on this page's topic)."""
    generation = selectors.generation_of(request.user, pk)
    if generation is None:
        raise Http404("no such generation")
    if generation.state != GenerationState.QUEUED:
        return JsonResponse({"state": generation.state})
    return JsonResponse({"state": generation.state, **selectors.queue_info(generation)})


@login_required
def generation_history(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.generations_of(request.user), 20).get_page(request.GET.get("page"))
    return render(request, "gallery/history.html", {"page": page, "area": "generate"})


@login_required
def generation_image(request: HttpRequest, pk: int, image_pk: int) -> HttpResponse:
    generation = selectors.generation_of(request.user, pk)
    if generation is None:
        raise Http404("no such generation")
    image = get_object_or_404(generation.images, pk=image_pk)
    if request.GET.get("size") == "thumb" and image.thumbnail:
        return serve_file(image.thumbnail, request=request)
    name = f"flux-studio-{generation.pk}-{image.index}-seed{image.seed}.png" if request.GET.get("download") else None
    return serve_file(image.image, download_name=name, request=request)


@login_required
@require_POST
def generation_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    generation = get_object_or_404(Generation, pk=pk, owner=request.user)
    if not services.generation_cancel(generation=generation):
        messages.warning(request, "This generation has already finished.")
    return redirect("gallery:generation_detail", pk)


@login_required
@require_POST
def generation_delete(request: HttpRequest, pk: int) -> HttpResponse:
    generation = get_object_or_404(Generation, pk=pk, owner=request.user)
    try:
        services.generation_delete(generation=generation)
    except ValidationError as exc:  # still running: as the API's 409
        text = " ".join(exc.messages)
        messages.warning(request, f"{text[:1].upper()}{text[1:]}.")
        return redirect("gallery:generation_detail", pk)
    messages.success(request, "Generation deleted.")
    target = request.POST.get("next", "")
    # Only paths on this site: a crafted form must not turn delete into an open redirect.
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = reverse("gallery:generation_history")
    return redirect(target)
