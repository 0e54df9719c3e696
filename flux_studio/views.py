"""Platform pages: home, sign-up, health."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.db import transaction
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from flux_studio.health import health_report


# Password guessing: after this many failed log-ins within LOGIN_LOCK_SECONDS, for one user name
# or from one address (more there: many people may share one), log-ins stop for the rest of it.
LOGIN_FAILURES_PER_NAME = 10
LOGIN_FAILURES_PER_ADDRESS = 30
LOGIN_LOCK_SECONDS = 300
LOGIN_COUNTERS = "login-failures"  # the cache keys' prefix


def client_address(request: HttpRequest) -> str:
    """The address a request came from. Behind the HTTPS proxy (SECURE=1) REMOTE_ADDR is the
    proxy's, the same for everyone: the last X-Forwarded-For entry is what the proxy saw (entries
    before it are the client's own say)."""
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if settings.SECURE and forwarded:
        return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR", "")


def login_counter(kind: str, value: str) -> str:
    """The cache key counting failed log-ins for a name or an address (hashed: any text makes a
    valid key)."""
    return f"{LOGIN_COUNTERS}:{kind}:{hashlib.sha256(value.encode()).hexdigest()[:24]}"


class ThrottledLoginView(auth_views.LoginView):
    """Django's log-in page, with a limit on failed attempts (counted in the cache)."""

    def post(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        name = request.POST.get("username", "")
        counters = ((login_counter("name", name.strip().lower()), LOGIN_FAILURES_PER_NAME),
                    (login_counter("address", client_address(request)), LOGIN_FAILURES_PER_ADDRESS))
        if any(cache.get(key, 0) >= limit for key, limit in counters):
            # An unbound form: the password is not checked at all, so the refusal is the same for a
            # right and a wrong one (a bound form would authenticate to show its own errors).
            form = self.get_form_class()(request, initial={"username": name})
            form.cleaned_data = {}
            form.add_error(None, f"Too many failed log-ins for this name or from this address: wait "
                                 f"{LOGIN_LOCK_SECONDS // 60} minutes, then try again.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        response = super().post(request, *args, **kwargs)
        if response.status_code == 200:  # the form came back: wrong name or password
            for key, _ in counters:
                cache.add(key, 0, LOGIN_LOCK_SECONDS)  # the window starts at the first failure
                try:
                    cache.incr(key)
                except ValueError:  # expired between the two calls
                    cache.set(key, 1, LOGIN_LOCK_SECONDS)
        else:
            cache.delete(counters[0][0])
        return response


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
