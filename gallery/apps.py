from django.apps import AppConfig


class GalleryConfig(AppConfig):
    name = "gallery"
    verbose_name = "Generation and community gallery"

    def ready(self) -> None:
        from flux_studio.topics import owner_authorizer, register_topic
        from gallery.models import Generation

        register_topic("generation", owner_authorizer(Generation))
