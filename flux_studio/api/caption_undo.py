"""Undo of the last bulk caption edit made over the API: the dataset page's Undo button, for scripts.

The page keeps its last bulk edit's changes in the browser and posts them back to
trainer.datasets.captions_restore, which puts back each caption's text and its former source
(an auto caption stays re-captionable; one from a zip's .txt stays "file"). A script has no page
to keep them in, so the API keeps the last bulk edit of each dataset (CaptionBulkEdit) and undoes
it through that same service. One level, as on the page: a newer bulk edit replaces the one kept.
As on the page, a caption that no longer reads as the bulk edit left it (typed, patched or
re-captioned since) is left alone (captions_restore's `expected`) and reported as skipped, and so
is a photo deleted since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from flux_studio.api.models import CaptionBulkEdit
from trainer import datasets
from trainer.datasets import CaptionChange
from trainer.models import Dataset

SKIP_CHANGED = "changed"  # the caption no longer reads as the bulk edit left it
SKIP_DELETED = "deleted"  # the photo is no longer in the dataset


class NothingToUndo(Exception):
    """No bulk edit is kept for the dataset, or not the one asked for."""


@dataclass(frozen=True)
class CaptionsUndone:
    edit: int
    op: str
    changes: list[CaptionChange]
    after_sources: dict[int, str]  # each restored caption's source now
    skipped: list[dict[str, Any]]


def bulk_edit_record(*, dataset: Dataset, op: str, changes: list[CaptionChange]) -> CaptionBulkEdit | None:
    """Keep an applied bulk edit for undo, replacing the dataset's last one; None when it changed
    nothing (the earlier edit, if any, stays undoable)."""
    if not changes:
        return None
    with transaction.atomic():
        # Two bulk edits at once must not both stay kept: the dataset's row serializes them.
        Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
        CaptionBulkEdit.objects.filter(dataset=dataset).delete()
        return CaptionBulkEdit.objects.create(dataset=dataset, op=op, changes=[change.as_dict() for change in changes])


@transaction.atomic
def bulk_edit_undo(*, dataset: Dataset, edit_id: int | None = None) -> CaptionsUndone:
    """Put back the captions and sources of the dataset's last bulk edit (`edit_id`: only if it is
    that one), then forget it: undoing twice is NothingToUndo."""
    kept = CaptionBulkEdit.objects.select_for_update().filter(dataset=dataset).order_by("-pk").first()
    if kept is None:
        raise NothingToUndo("nothing to undo: no bulk caption edit of this dataset is kept (it was undone "
                            "already, or none was made over the API)")
    if edit_id is not None and edit_id != kept.pk:
        raise NothingToUndo(f"bulk edit {edit_id} can no longer be undone: only the dataset's last bulk edit "
                            f"can, and that is {kept.pk}")
    wanted = {int(row["id"]): row for row in kept.changes}
    changes = datasets.captions_restore(
        dataset=dataset, captions={pk: row["before"] for pk, row in wanted.items()},
        sources={pk: row["before_source"] for pk, row in wanted.items()},
        expected={pk: row["after"] for pk, row in wanted.items()},
    )
    restored = {change.id for change in changes}
    present = set(dataset.photos.filter(pk__in=list(wanted)).values_list("pk", flat=True))
    skipped = [{"id": pk, "reason": SKIP_CHANGED if pk in present else SKIP_DELETED} for pk in wanted if pk not in restored]
    after_sources = dict(dataset.photos.filter(pk__in=list(restored)).values_list("pk", "caption_source"))
    undone = CaptionsUndone(edit=kept.pk, op=kept.op, changes=changes, after_sources=after_sources, skipped=skipped)
    kept.delete()
    return undone
