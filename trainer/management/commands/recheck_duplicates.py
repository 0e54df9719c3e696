"""Re-check near-duplicate flags after upgrading from a release that compared layout alone.

    python manage.py recheck_duplicates

Photos flagged as near-duplicates of an earlier photo in other colours (the same composition on
a red then a blue blanket) lose the flag and its warning, as new uploads would. Safe to run again.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from trainer.photo_duplicates import recheck_flags


class Command(BaseCommand):
    help = "Clear near-duplicate flags that the colour check no longer sets (after an upgrade)."

    def handle(self, *args: object, **options: object) -> None:
        cleared = recheck_flags()
        self.stdout.write(f"{cleared} photo(s) no longer flagged as near-duplicates.")
