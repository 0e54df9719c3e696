from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "flux_studio.api"
    label = "api"
    verbose_name = "HTTP API"
