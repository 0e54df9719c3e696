"""Platform pages: home, sign-up, health."""

from __future__ import annotations

import secrets

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from flux_studio.health import health_report


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


def _safe_next(request: HttpRequest) -> str:
    """The page a person was heading to (e.g. "Try it" with a LoRA preselected), if it is ours."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    allowed = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    return target if allowed else ""


def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect(_safe_next(request) or "home")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(_safe_next(request) or "trainer:dataset_list")
    return render(request, "registration/signup.html", {"form": form, "next": _safe_next(request)})


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    report = health_report(detailed=request.user.is_staff)
    return JsonResponse(report, status=200 if report["ok"] else 503)


@login_required
@require_POST
def worker_ping(request: HttpRequest) -> JsonResponse:
    """Send a ping through the GPU queue; the worker answers on the user's event topic."""
    from flux_studio.tasks import worker_ping_task

    nonce = secrets.token_hex(8)
    transaction.on_commit(lambda: worker_ping_task(request.user.pk, nonce))
    return JsonResponse({"nonce": nonce, "topic": f"user-{request.user.pk}"}, status=202)
