"""Upgrading keeps the queue in order: the enqueue time moves out of the settings into its column.

Before, the time a job joined the queue was kept in its settings (config["enqueued_at"]); a job
resumed after a later one must stay behind it across the upgrade, and jobs from before that key
existed count from their creation.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from trainer import job_queue
from trainer.models import TrainingJob

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("trainer", "0004_dataset_caption_prompt")]


def migrate(targets: list[tuple[str, str]] | None = None):
    """Migrate to `targets` (the latest of every app when None); the models as they were there."""
    executor = MigrationExecutor(connection)
    targets = targets or executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_upgrade_keeps_each_waiting_job_where_it_stood(django_user_model):
    old = migrate(BEFORE)
    try:
        owner = old.get_model("auth", "User").objects.create(username="alice")
        Job = old.get_model("trainer", "TrainingJob")
        settings = {"steps": 10, "learning_rate": 1e-4}

        def job(name: str, created_ago: int, enqueued_ago: int | None = None):
            config = dict(settings)
            if enqueued_ago is not None:
                config["enqueued_at"] = (timezone.now() - timedelta(minutes=enqueued_ago)).isoformat()
            row = Job.objects.create(owner=owner, name=name, base_model="tiny", trigger_word="zxq", config=config,
                                     total_steps=10)
            Job.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(minutes=created_ago))
            return row.pk

        resumed = job("created first, resumed last", created_ago=60, enqueued_ago=1)
        older = job("queued before the key existed", created_ago=30)
        newer = job("created and queued later", created_ago=10, enqueued_ago=10)
    finally:
        migrate()  # whatever happened, the schema the other tests expect

    assert list(job_queue.queue_positions()) == [older, newer, resumed]
    for row in TrainingJob.objects.all():
        assert row.config == settings, "the time left the settings a continued job copies"
    assert TrainingJob.objects.get(pk=older).enqueued_at == TrainingJob.objects.get(pk=older).created_at
