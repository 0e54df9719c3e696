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


def _details(request: HttpRequest) -> dict[str, str]:
    """The details form as posted."""
    return {name: request.POST.get(name, "") for name in ("title", "description", "trigger_word", "license", "tags")}


def _save(request: HttpRequest, model: GalleryModel) -> str:
    services_gallery.gallery_model_update(model=model, **_details(request))
    return "Saved."


def _publish(request: HttpRequest, model: GalleryModel) -> str:
    _save(request, model)  # in the POST's transaction: details that cannot be published are not saved either
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


def _example(request: HttpRequest, model: GalleryModel) -> object:
    """The example an action names: `action=cover:<pk>` (a button of the details form) or `example=<pk>`."""
    pk = request.POST.get("action", "").partition(":")[2] or request.POST.get("example") or ""
    return get_object_or_404(model.examples, pk=int(pk) if pk.isdigit() else 0)


def _cover(request: HttpRequest, model: GalleryModel) -> str:
    services_gallery.example_set_cover(example=_example(request, model))
    return "Cover image changed."


def _remove(request: HttpRequest, model: GalleryModel) -> str:
    services_gallery.example_remove(example=_example(request, model))
    return "Example removed."


ACTIONS: dict[str, Callable[[HttpRequest, GalleryModel], str]] = {
    "save": _save, "publish": _publish, "unpublish": _unpublish, "add": _add_samples, "cover": _cover, "remove": _remove,
}
# The actions of the details form: when one fails, the page comes back with what was typed.
DETAIL_ACTIONS = {"save", "publish"}
# The example actions post the details as typed too (their buttons belong to the details form);
# they do not save them, but the page after the action shows them again, marked as not saved.
TYPED_KEY = "publish-typed-{}"


def _keep_typed(request: HttpRequest, job: TrainingJob) -> None:
    """Remember details typed but not saved, for the page the example action redirects to."""
    if "title" not in request.POST:  # an older form, or an API-style post: nothing was typed
        return
    typed = _details(request)
    stored = GalleryModel.objects.filter(training=job).first() or services_gallery.draft_preview(owner=request.user, job=job)
    if typed != {k: str(v) for k, v in PublishForm.of(stored).initial.items()}:
        request.session[TYPED_KEY.format(job.pk)] = typed


def _stored_or_preview(request: HttpRequest, job: TrainingJob) -> GalleryModel:
    """The training's gallery model as stored, or else an unsaved preview of its draft: a GET, or a
    refused POST, writes no draft."""
    return GalleryModel.objects.filter(training=job).first() or services_gallery.draft_preview(owner=request.user, job=job)


def _act(request: HttpRequest, job: TrainingJob, name: str) -> str:
    """Run one action on the training's model (a new draft, the first time); what it did, or a
    ValidationError. A refused action leaves nothing behind, the draft it made included (as over
    the API); refused details are refused before the draft's first examples are copied at all."""
    if name in DETAIL_ACTIONS:
        services_gallery.gallery_model_details(**_details(request))
    with services_gallery.copies_undone_on_error(), transaction.atomic():
        model = services_gallery.draft_for_training(owner=request.user, job=job)
        return ACTIONS[name](request, model)


@login_required
def publish(request: HttpRequest, job_pk: int) -> HttpResponse:
    job = get_object_or_404(TrainingJob, pk=job_pk, owner=request.user)
    try:
        services_gallery.check_publishable(owner=request.user, job=job)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return redirect(job)
    if request.method != "POST":
        model = _stored_or_preview(request, job)
        typed = request.session.pop(TYPED_KEY.format(job.pk), None)
        return _page(request, job, model, PublishForm(initial=typed) if typed else PublishForm.of(model), unsaved=bool(typed))
    name = request.POST.get("action", "").partition(":")[0]
    if name not in ACTIONS:
        messages.error(request, "Unknown action.")
        return redirect("gallery:publish", job.pk)
    if name not in DETAIL_ACTIONS:
        _keep_typed(request, job)
    try:
        messages.success(request, _act(request, job, name))
    except ValidationError as exc:
        if name not in DETAIL_ACTIONS:
            messages.error(request, _error_text(exc))
        else:  # nothing typed is lost: the same page, the errors next to their fields, the model as stored
            form = PublishForm(request.POST)
            form.add_service_errors(exc)
            return _page(request, job, _stored_or_preview(request, job), form,
                         failed="published" if name == "publish" else "saved")
    return redirect("gallery:publish", job.pk)


def _page(
    request: HttpRequest, job: TrainingJob, model: GalleryModel, form: PublishForm, failed: str = "", unsaved: bool = False
) -> HttpResponse:
    """The page; `failed` names what a refused POST did not do ("saved"), which answers 400;
    `unsaved`: the form holds details typed before an example action, not yet saved."""
    examples = list(model.examples.all()) if model.pk else []
    samples, images = list(job.samples.order_by("-step")[:24]), list(selectors.generation_images_with(request.user, job))
    # Those already examples (or about to be, for an unsaved draft) are shown as added, not offered.
    added_samples = services_gallery.samples_already_examples(model=model, samples=samples)
    added_images = services_gallery.images_already_examples(model=model, images=images)
    return render(request, "gallery/publish.html", {
        "model": model, "job": job, "form": form, "failed": failed, "unsaved": unsaved, "examples": examples,
        "licenses": License.choices,
        # Before the first save, the samples that will become the first examples.
        "first_samples": [] if model.pk else services_gallery.first_example_samples(job),
        "samples": [(s, s.pk in added_samples) for s in samples], "images": [(i, i.pk in added_images) for i in images],
        "can_add": len(added_samples) < len(samples) or len(added_images) < len(images),
        "area": "gallery",
        # A LoRA of FLUX.1 [dev] is a derivative of a model under a non-commercial license.
        "dev_base": hub_base_model(model.base_model) == FLUX_DEV_HUB_ID,
    }, status=400 if failed else 200)
