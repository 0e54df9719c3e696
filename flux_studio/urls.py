from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from flux_studio import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("healthz/worker-ping", views.worker_ping, name="worker_ping"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("flux_studio.api.urls")),
    path("", include("trainer.urls")),
    path("", include("gallery.urls")),
]
