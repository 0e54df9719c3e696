"""Training pages: launch, list, the live job page, cancel/resume/continue, downloads."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from flux_studio.relay import settled_id
from trainer import job_queue, jobs, selectors
from trainer.engine.presets import preset_for  # torch-free
from trainer.models import ACTIVE_STATES, Dataset, JobState, TrainingJob
from trainer.forms import WholeSettingsForm
from trainer.presets import LIMITS, MEMORY_MODES, PRESETS, changed_from_preset, preset_summary, resolution_text
from trainer.trigger_words import caption_room_warning

DOWNLOADS = {"lora": "lora_file", "kohya": "kohya_file", "config": "config_file"}  # the page's kinds: file fields


def _own_job(request: HttpRequest, pk: int) -> TrainingJob:
    return get_object_or_404(TrainingJob, pk=pk, owner=request.user)


JOBS_PER_PAGE = 25
# The list's filters: ?state= value -> (label, the job states it shows; None for all).
JOB_FILTERS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "all": ("All", None),
    "running": ("Running or queued", ACTIVE_STATES),
    "finished": ("Finished", (JobState.SUCCEEDED,)),
    "stopped": ("Failed or canceled", (JobState.FAILED, JobState.CANCELED)),
}


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    """The person's trainings, newest first, a page at a time, optionally of one kind of state."""
    shown = request.GET.get("state") if request.GET.get("state") in JOB_FILTERS else "all"
    # Read before the rows: every event after this id is newer than what the rows show, so the
    # page's live rows (job_list.js) ask only for those. Not simply the newest id: on PostgreSQL a
    # lower id may still commit (see flux_studio.relay), and a row's final state must not be skipped.
    events_after = settled_id()
    job_rows = TrainingJob.objects.filter(owner=request.user).select_related("dataset").order_by("-created_at", "-pk")
    states = JOB_FILTERS[shown][1]
    if states is not None:
        job_rows = job_rows.filter(state__in=states)
    page = Paginator(job_rows, JOBS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "trainer/job_list.html", {
        "page": page, "jobs": page.object_list, "area": "training", "shown": shown, "events_after": events_after,
        "filters": [(key, label) for key, (label, _) in JOB_FILTERS.items()],
        "keep": "" if shown == "all" else f"state={shown}&",  # the filter, kept by the page links
    })


def _error_text(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{k.replace('_', ' ')}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)


def _whole_settings(request: HttpRequest) -> tuple[dict[str, int], dict[str, list[str]]]:
    """The counting settings typed on the form (steps, rank, ...) as whole numbers, and the
    messages for those that are not."""
    form = WholeSettingsForm(request.POST)
    form.is_valid()
    values = {key: value for key, value in form.cleaned_data.items() if value is not None}
    return values, {key: [str(m) for m in messages] for key, messages in form.errors.items()}


def _launch(request: HttpRequest, dataset: Dataset, preset: str, base: str) -> TrainingJob:
    """The training the launch form asks for; a ValidationError names every bad setting at once
    (the ones that are not whole numbers with those out of range or unknown)."""
    whole, not_whole = _whole_settings(request)
    typed = {k: request.POST.get(k) for k in jobs.SETTING_KEYS if request.POST.get(k) and k not in not_whole}
    overrides = {**typed, **whole}
    prompts = request.POST.get("sample_prompts", "").splitlines()
    if not_whole:
        others: dict[str, list[str]] = {}
        try:
            jobs.clean_settings(preset=preset, base_model=base, overrides=overrides, sample_prompts=prompts)
        except ValidationError as exc:
            others = exc.message_dict if hasattr(exc, "message_dict") else {"settings": exc.messages}
        fields = [k for k in jobs.SETTING_KEYS if k in others or k in not_whole]  # in the form's order
        raise ValidationError({k: others.get(k, []) + not_whole.get(k, []) for k in fields}
                              | {k: v for k, v in others.items() if k not in fields})
    return jobs.job_create(owner=request.user, dataset=dataset, preset=preset, base_model=base, overrides=overrides,
                           sample_prompts=prompts or None)


@login_required
def job_launch(request: HttpRequest, dataset_pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=dataset_pk, owner=request.user)
    base = request.POST.get("base_model") or request.GET.get("base_model") or settings.DEFAULT_BASE_MODEL
    preset = request.POST.get("preset") or "balanced"
    error = ""
    if request.method == "POST":
        try:
            job = _launch(request, dataset, preset, base)
        except ValidationError as exc:
            error = _error_text(exc)
        else:
            return redirect(job)
    photo_count = dataset.photos.filter(excluded=False).count()
    # Every offered base's explanations and figures: the page shows the chosen base's and
    # static/js/launch.js swaps them when another is picked (without JavaScript, ?base_model=).
    summaries = {name: {key: preset_summary(key, name, photo_count) for key in PRESETS}
                 for name in settings.BASE_MODELS}
    shown = base if base in summaries else settings.DEFAULT_BASE_MODEL
    # Captions longer than a base reads are cut: said per base, before the launch (launch.js swaps it)
    captions = list(dataset.photos.filter(excluded=False).values_list("caption", flat=True))
    caption_room = {name: caption_room_warning(captions, name) for name in settings.BASE_MODELS}
    # The estimates in the figures follow the memory mode too: the selected one's (fast unless a
    # refused launch chose low), and launch.js swaps them when another is picked.
    memory_mode = request.POST.get("memory_mode") if request.POST.get("memory_mode") in MEMORY_MODES else "fast"
    return render(request, "trainer/job_launch.html", {
        "dataset": dataset, "presets": [{"preset": p, **summary, "figures": summary["figures_by_memory_mode"][memory_mode]}
                                        for p, summary in zip(PRESETS.values(), summaries[shown].values())],
        "summaries": summaries, "chosen": preset, "base": shown, "caption_room": caption_room,
        "caption_room_shown": caption_room.get(shown, ""),
        "bases": [{"name": name, "description": preset_for(name).description} for name in settings.BASE_MODELS],
        "photo_count": photo_count, "error": error, "area": "training", "memory_modes": MEMORY_MODES.items(),
        "memory_mode": memory_mode, "posted": request.POST, "seed_limits": LIMITS["seed"],
        "default_prompt": f"a photo of {dataset.trigger_word}" if dataset.trigger_word else "",
    })


@login_required
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _own_job(request, pk)
    queue_position = job_queue.queue_position(job)
    return render(request, "trainer/job_detail.html", {
        "job": job, "samples": job.samples.all(), "queue_position": queue_position, "area": "training",
        "resolutions": resolution_text(job.config.get("resolution") or []), "step_limits": LIMITS["steps"],
        "preset": PRESETS.get(job.config.get("preset", "")), "changed": changed_from_preset(job.config, job.base_model),
    })


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _own_job(request, pk)
    if not jobs.job_cancel(job=job):
        messages.warning(request, "This job has already finished.")
    return redirect(job)


@login_required
@require_POST
def job_resume_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _own_job(request, pk)
    try:
        jobs.job_resume(job=job, memory_mode=request.POST.get("memory_mode") or None)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
    return redirect(job)


@login_required
@require_POST
def job_continue_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _own_job(request, pk)
    try:
        whole, not_whole = _whole_settings(request)
        if not_whole:
            raise ValidationError(not_whole)
        child = jobs.job_continue(job=job, extra_steps=whole.get("steps", 0))
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return redirect(job)
    return redirect(child)


@login_required
@require_POST
def job_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _own_job(request, pk)
    name = job.name
    try:
        jobs.job_delete(job=job)
    except ValidationError as exc:
        messages.error(request, _error_text(exc))
        return redirect(job)
    messages.success(request, f"Deleted “{name}” with its LoRA, samples and checkpoints.")
    return redirect("trainer:job_list")


@login_required
def job_sample(request: HttpRequest, pk: int, sample_pk: int) -> HttpResponse:
    from flux_studio.files import serve_file

    job = _own_job(request, pk)
    sample = get_object_or_404(job.samples, pk=sample_pk)
    return serve_file(sample.image)


@login_required
def job_download(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    from flux_studio.files import serve_file

    job = _own_job(request, pk)
    if kind == "data":  # the photos and captions as trained, beside which config.yaml runs as it is
        return selectors.training_data_response(job)
    if kind not in DOWNLOADS:
        raise Http404("unknown download")
    file = getattr(job, DOWNLOADS[kind])
    if not file:
        raise Http404("this job has no such file yet")
    return serve_file(file, download_name=selectors.download_name(job, DOWNLOADS[kind]))
