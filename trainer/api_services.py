"""Writes the HTTP API offers that the web pages have no service for: deleting a training.

Kept apart from trainer.jobs (the launch/cancel/resume services) so the API can grow without
touching the training pipeline. Torch-free: views import it.
"""

from __future__ import annotations

import logging

from django.db import transaction

from trainer import checkpoint_store
from trainer.datasets import images_in_training_snapshots
from trainer.models import ACTIVE_STATES, JobState, Photo, TrainingJob

log = logging.getLogger(__name__)


class Refused(Exception):
    """The object is in a state where the write cannot happen; the message says what to do."""


def training_delete(*, job: TrainingJob) -> None:
    """Delete a finished (succeeded, failed or canceled) training with its files.

    Refused while it runs or waits (cancel it first), while its gallery model is published
    (other people may be using it: unpublish first), and while a continuation that has not
    succeeded yet still needs its weights to start from. A private gallery draft goes with it.
    Files go once the delete has committed: the LoRA, kohya and config files, samples, the
    draft's example images, stored checkpoints, and photo files only this training still kept
    (photos deleted from their dataset after it was launched).
    """
    from gallery.models import GalleryModel  # trainer does not depend on gallery at import time

    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job.pk)
        if job.state in ACTIVE_STATES:
            raise Refused(f"this training is still {job.state}: cancel it first (POST /trainings/{job.pk}/cancel), "
                          "then delete it once it has stopped")
        model = GalleryModel.objects.filter(training=job).first()
        if model is not None and model.published:
            raise Refused(f"this training is published in the gallery as model {model.pk}, where others may use it; "
                          "unpublish it first (POST /models with \"published\": false)")
        waiting = list(job.continuations.exclude(state=JobState.SUCCEEDED).values_list("pk", flat=True))
        if waiting:
            raise Refused(f"training(s) {', '.join(map(str, waiting))} continue from this one's weights and have not "
                          "succeeded yet; delete or finish them first")
        files = [getattr(job, name) for name in ("lora_file", "kohya_file", "config_file")]
        files += [sample.image for sample in job.samples.all()]
        if model is not None:
            for example in model.examples.all():
                files += [example.image, example.thumbnail]
        snapshot_images = {row.get("image", "") for row in job.snapshot or [] if isinstance(row, dict)} - {""}
        owner_id, deleted = job.owner_id, TrainingJob(pk=job.pk, owner_id=job.owner_id)
        job.delete()  # samples, the gallery draft and its examples cascade
        transaction.on_commit(lambda: _delete_training_files(deleted, owner_id, files, snapshot_images))


def _delete_training_files(job: TrainingJob, owner_id: int, files: list, snapshot_images: set[str]) -> None:
    for field in files:
        if field and field.name:
            try:
                field.storage.delete(field.name)
            except OSError:
                log.warning("could not delete %s", field.name, exc_info=True)
    try:
        checkpoint_store.prune(job)
    except (NotImplementedError, OSError):
        log.warning("could not remove the stored checkpoints of training %s", job.pk, exc_info=True)
    # Photo files the training's snapshot kept after their photos were deleted: nobody needs them
    # now, unless a photo still uses the file or another training (a continuation) names it.
    in_use = set(Photo.objects.filter(image__in=snapshot_images).values_list("image", flat=True))
    orphans = snapshot_images - in_use - images_in_training_snapshots(owner_id)
    if orphans:
        from django.core.files.storage import default_storage

        for name in orphans:
            try:
                default_storage.delete(name)
            except OSError:
                log.warning("could not delete %s", name, exc_info=True)
