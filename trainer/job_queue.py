"""Where each waiting training stands in the GPU queue, live on its page.

The order is the order of enqueueing, not of creation: a resumed or recovered job goes to the
back of the Huey queue, so its position counts from its re-enqueue. The time is kept in the
job's config (`enqueued_at`, ISO 8601 UTC); jobs queued before it existed fall back to their
creation time. Whenever the queue changes (a job enqueued, claimed, canceled or finished) each
waiting job gets a `queue` event with its position, so its page needs no reload.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from flux_studio import events
from trainer.models import JobState, TrainingJob


def mark_enqueued(job: TrainingJob) -> None:
    """Record that the job joins the back of the queue now."""
    job.config = {**job.config, "enqueued_at": timezone.now().isoformat()}
    TrainingJob.objects.filter(pk=job.pk).update(config=job.config)


def queue_positions() -> dict[int, int]:
    """Position (1 = next) of every queued job. A queue holds a handful of jobs: sorted here,
    since ordering by a JSON key differs between SQLite and PostgreSQL."""
    waiting = TrainingJob.objects.filter(state=JobState.QUEUED).values_list("pk", "config", "created_at")
    order = sorted(waiting, key=lambda row: (_enqueued_at(row[1], row[2]), row[0]))
    return {pk: index for index, (pk, _, _) in enumerate(order, start=1)}


def _enqueued_at(config: dict | None, created_at: datetime) -> datetime:
    stamp = (config or {}).get("enqueued_at")
    return datetime.fromisoformat(stamp) if stamp else created_at


def queue_position(job: TrainingJob) -> int:
    """The job's position, or 0 when it is not waiting."""
    return queue_positions().get(job.pk, 0) if job.state == JobState.QUEUED else 0


def publish_queue_positions() -> None:
    """Tell every waiting job's page where it stands now (and how many trainings are running)."""
    running = TrainingJob.objects.filter(state__in=(JobState.STARTING, JobState.TRAINING)).count()
    for pk, position in queue_positions().items():
        events.publish(f"training-{pk}", "queue", {"position": position, "running": running})
