from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "flux_studio.api"
    label = "api"
    verbose_name = "HTTP API"

    def ready(self) -> None:
        # Webhooks follow the events table, so trainer and gallery code need no hooks of their own.
        from flux_studio.api import webhooks

        webhooks.connect()
