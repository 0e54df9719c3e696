from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from flux_studio import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    # Browsers and feed readers ask for it whatever the pages link to.
    path("favicon.ico", RedirectView.as_view(url=static("img/favicon.svg"), permanent=True)),
    path("healthz/worker-ping", views.worker_ping, name="worker_ping"),
    path("accounts/signup/", views.signup, name="signup"),
    # Sign-up asks for no email address, so there is no password reset by email (Django's own
    # reset pages would say "sent" and send nothing): an admin sets a new one
    # (`manage.py changepassword NAME`).
    path("accounts/login/", views.ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("flux_studio.api.urls")),
    path("", include("trainer.urls")),
    path("", include("gallery.urls")),
]
