from typing import Any

from django.apps import AppConfig
from django.db.backends.signals import connection_created


class GalleryConfig(AppConfig):
    name = "gallery"
    verbose_name = "Generation and community gallery"

    def ready(self) -> None:
        from flux_studio.topics import owner_authorizer, register_topic
        from gallery.models import Generation

        register_topic("generation", owner_authorizer(Generation))
        connection_created.connect(_add_sqlite_functions)


def _add_sqlite_functions(sender: Any, connection: Any, **kwargs: Any) -> None:
    """The gallery search's lower-casing of every letter (`selectors.UnicodeLower`), on each SQLite connection."""
    if connection.vendor == "sqlite":
        from gallery.selectors import SQLITE_LOWER, sqlite_lower

        connection.connection.create_function(SQLITE_LOWER, 1, sqlite_lower, deterministic=True)
