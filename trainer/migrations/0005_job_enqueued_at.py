"""The queue order moves from the settings JSON (config["enqueued_at"], an ISO string) to an
indexed column, so the queue's positions are one ordered query instead of a sort in Python."""

from datetime import datetime
from typing import Any

import django.utils.timezone
from django.db import migrations, models

BATCH = 500


def to_column(apps: Any, schema_editor: Any) -> None:
    """Each job's last enqueue time, or its creation time for jobs queued before it was kept;
    the key leaves the settings, which a continued job copies."""
    TrainingJob = apps.get_model("trainer", "TrainingJob")
    batch = []
    for job in TrainingJob.objects.only("pk", "config", "created_at").iterator(chunk_size=BATCH):
        config = dict(job.config or {})
        stamp = config.pop("enqueued_at", None)
        job.enqueued_at = datetime.fromisoformat(stamp) if stamp else job.created_at
        job.config = config
        batch.append(job)
        if len(batch) >= BATCH:
            TrainingJob.objects.bulk_update(batch, ["enqueued_at", "config"])
            batch = []
    TrainingJob.objects.bulk_update(batch, ["enqueued_at", "config"])


def to_config(apps: Any, schema_editor: Any) -> None:
    """Going back: the time returns to the settings, where the older code reads it."""
    TrainingJob = apps.get_model("trainer", "TrainingJob")
    batch = []
    for job in TrainingJob.objects.only("pk", "config", "enqueued_at").iterator(chunk_size=BATCH):
        job.config = {**(job.config or {}), "enqueued_at": job.enqueued_at.isoformat()}
        batch.append(job)
        if len(batch) >= BATCH:
            TrainingJob.objects.bulk_update(batch, ["config"])
            batch = []
    TrainingJob.objects.bulk_update(batch, ["config"])


class Migration(migrations.Migration):

    dependencies = [
        ('trainer', '0004_dataset_caption_prompt'),
    ]

    operations = [
        migrations.AddField(
            model_name='trainingjob',
            name='enqueued_at',
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunPython(to_column, to_config),
        migrations.AddIndex(
            model_name='trainingjob',
            index=models.Index(fields=['state', 'enqueued_at', 'id'], name='trainer_job_queue_order'),
        ),
    ]
