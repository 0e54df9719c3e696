"""The owner's publishing page for one training: details, examples, publish and unpublish."""

from __future__ import annotations

from typing import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from gallery import selectors, services_gallery
from gallery.forms import PublishForm
from gallery.lora_usage import hub_base_model
from gallery.models import GalleryModel, License
from trainer.models import TrainingJob

FLUX_DEV_HUB_ID = "black-forest-labs/FLUX.1-dev"


def _error_text(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{k.replace('_', ' ')}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


def _save(request: HttpRequest, model: GalleryModel) -> str:
    p = request.POST
    services_gallery.gallery_model_update(model=model, title=p.get("title", ""), description=p.get("description", ""),
                                          trigger_word=p.get("trigger_word", ""), license=p.get("license", ""),
                                          tags=p.get("tags", ""))
    return "Saved."


def _publish(request: HttpRequest, model: GalleryModel) -> str:
    with transaction.atomic():  # as over the API: details that cannot be published are not saved either
        _save(request, model)
        services_gallery.gallery_model_publish(model=model)
    return "Published: everyone can now find it in the gallery."


def _unpublish(request: HttpRequest, model: GalleryModel) -> str:
    services_gallery.gallery_model_unpublish(model=model)
    return "Unpublished: only you can see it now."


def _add_samples(request: HttpRequest, model: GalleryModel) -> str:
    added = services_gallery.examples_add_samples(
        model=model, samples=model.training.samples.filter(pk__in=request.POST.getlist("sample")))
    # The candidates are a sliced query (newest 60), which cannot be filtered further: pick in Python.
    wanted = {int(pk) for pk in request.POST.getlist("image") if pk.isdigit()}
    images = [i for i in selectors.generation_images_with(request.user, model.training) if i.pk in wanted]
    for image in images:
        services_gallery.example_add_from_generation(owner=request.user, model=model, image=image)
    return f"Added {len(added) + len(images)} example(s)."


def _cover(request: HttpRequest, model: GalleryModel) -> str:
    services_gallery.example_set_cover(example=get_object_or_404(model.examples, pk=request.POST.get("example") or 0))
    return "Cover image changed."


def _remove(request: HttpRequest, model: GalleryModel) -> str:
    services_gallery.example_remove(example=get_object_or_404(model.examples, pk=request.POST.get("example") or 0))
    return "Example removed."


ACTIONS: dict[str, Callable[[HttpRequest, GalleryModel], str]] = {
    "save": _save, "publish": _publish, "unpublish": _unpublish, "add": _add_samples, "cover": _cover, "remove": _remove,
}
# The actions of the details form: when one fails, the page comes back with what was typed.
DETAIL_ACTIONS = {"save", "publish"}


def _model_for(request: HttpRequest, job: TrainingJob) -> GalleryModel:
    """The training's gallery model; a GET shows an unsaved preview rather than writing a draft."""
    if request.method == "POST":
        return services_gallery.draft_for_training(owner=request.user, job=job)
    services_gallery.check_publishable(owner=request.user, job=job)
    return GalleryModel.objects.filter(training=job).first() or services_gallery.draft_preview(owner=request.user, job=job)


@login_required
def publish(request: HttpRequest, job_pk: int) -> HttpResponse:
    job = get_object_or_404(TrainingJob, pk=job_pk, owner=request.user)
    try:
        model = _model_for(request, job)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return redirect(job)
    if request.method == "POST":
        name = request.POST.get("action", "")
        action = ACTIONS.get(name)
        if action is None:
            messages.error(request, "Unknown action.")
        else:
            try:
                messages.success(request, action(request, model))
            except ValidationError as exc:
                if name not in DETAIL_ACTIONS:
                    messages.error(request, _error_text(exc))
                else:  # nothing typed is lost: the same page, the errors next to their fields
                    model.refresh_from_db()  # as stored: a publish that failed rolled its save back
                    form = PublishForm(request.POST)
                    form.add_service_errors(exc)
                    return _page(request, job, model, form, failed="published" if name == "publish" else "saved")
        return redirect("gallery:publish", job.pk)
    return _page(request, job, model, PublishForm.of(model))


def _page(request: HttpRequest, job: TrainingJob, model: GalleryModel, form: PublishForm, failed: str = "") -> HttpResponse:
    """The page; `failed` names what a refused POST did not do ("saved"), which answers 400."""
    examples = list(model.examples.all()) if model.pk else []
    return render(request, "gallery/publish.html", {
        "model": model, "job": job, "form": form, "failed": failed, "examples": examples, "licenses": License.choices,
        # Before the first save, the samples that will become the first examples.
        "first_samples": [] if model.pk else services_gallery.first_example_samples(job),
        "samples": job.samples.order_by("-step")[:24], "images": selectors.generation_images_with(request.user, job),
        "area": "gallery",
        # A LoRA of FLUX.1 [dev] is a derivative of a model under a non-commercial license.
        "dev_base": hub_base_model(model.base_model) == FLUX_DEV_HUB_ID,
    }, status=400 if failed else 200)
