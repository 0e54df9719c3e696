"""Platform tables: the event log that feeds live pages, and worker heartbeats."""

from __future__ import annotations

from django.db import models


class Event(models.Model):
    """Something a browser should see (progress, a sample, a log line, a caption).

    Rows are the replay log: a page that opens late or reconnects reads what it missed from here.
    The channel layer only delivers them live.
    """

    id = models.BigAutoField(primary_key=True)
    topic = models.CharField(max_length=100, db_index=True, help_text="e.g. training-12, dataset-3")
    kind = models.CharField(max_length=40)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["topic", "id"])]

    def __str__(self) -> str:
        return f"{self.topic}#{self.id} {self.kind}"

    def as_message(self) -> dict:
        return {"id": self.id, "kind": self.kind, "data": self.data, "ts": self.created_at.isoformat()}


class WorkerHeartbeat(models.Model):
    """One row per running worker process, refreshed every few seconds."""

    worker_id = models.CharField(max_length=120, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.IntegerField()
    queue = models.CharField(max_length=20)
    device = models.CharField(max_length=255, default="cpu", help_text="GPU name or 'cpu'")
    current_task = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.worker_id} ({self.queue}, {self.device})"
