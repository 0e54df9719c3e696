"""Where each waiting training stands in the GPU queue, live on its page.

The order is the order of enqueueing, not of creation: a resumed or recovered job goes to the
back of the Huey queue, so its position counts from its re-enqueue. The time is the job's
`enqueued_at` column, set on every enqueue; the ties of one clock tick go by id. Whenever the
queue changes (a job enqueued, claimed, canceled or finished) each waiting job gets a `queue`
event with its position, so its page needs no reload.
"""

from __future__ import annotations

from django.utils import timezone

from flux_studio import events
from trainer.models import JobState, TrainingJob


def mark_enqueued(job: TrainingJob) -> None:
    """Record that the job joins the back of the queue now."""
    job.enqueued_at = timezone.now()
    TrainingJob.objects.filter(pk=job.pk).update(enqueued_at=job.enqueued_at)


def queue_positions() -> dict[int, int]:
    """Position (1 = next) of every queued job."""
    waiting = TrainingJob.objects.filter(state=JobState.QUEUED).order_by("enqueued_at", "pk").values_list("pk", flat=True)
    return {pk: index for index, pk in enumerate(waiting, start=1)}


def queue_position(job: TrainingJob) -> int:
    """The job's position, or 0 when it is not waiting."""
    return queue_positions().get(job.pk, 0) if job.state == JobState.QUEUED else 0


def running_count() -> int:
    """How many trainings hold a GPU now (starting or training)."""
    return TrainingJob.objects.filter(state__in=(JobState.STARTING, JobState.TRAINING)).count()


def queue_state(job: TrainingJob) -> dict[str, int] | None:
    """What the job's page shows while it waits (its `queue` event); None when it is not waiting."""
    position = queue_position(job)
    return {"position": position, "running": running_count()} if position else None


def publish_queue_positions() -> None:
    """Tell every waiting job's page where it stands now (and how many trainings are running)."""
    running = running_count()
    for pk, position in queue_positions().items():
        events.publish(f"training-{pk}", "queue", {"position": position, "running": running})
