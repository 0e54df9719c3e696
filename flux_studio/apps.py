from django.apps import AppConfig


class FluxStudioConfig(AppConfig):
    name = "flux_studio"
    verbose_name = "FLUX Studio platform"

    def ready(self) -> None:
        from flux_studio.topics import register_topic

        # A user's own topic: notifications and worker pings meant for them alone.
        register_topic("user", lambda user, object_id: user.is_authenticated and user.pk == object_id)
