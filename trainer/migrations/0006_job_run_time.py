"""A job's run time leaves out the time between runs: `run_started_at` (the latest run's start) and
`ran_seconds` (the runs that ended before it). Existing jobs count as one run from their first
start, as their run time was counted before."""

from typing import Any

from django.db import migrations, models
from django.db.models import F


def latest_run_from_first_start(apps: Any, schema_editor: Any) -> None:
    TrainingJob = apps.get_model("trainer", "TrainingJob")
    TrainingJob.objects.filter(started_at__isnull=False).update(run_started_at=F("started_at"))


class Migration(migrations.Migration):

    dependencies = [
        ('trainer', '0005_job_enqueued_at'),
    ]

    operations = [
        migrations.AddField(
            model_name='trainingjob',
            name='run_started_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='trainingjob',
            name='ran_seconds',
            field=models.FloatField(default=0),
        ),
        migrations.RunPython(latest_run_from_first_start, migrations.RunPython.noop),
    ]
