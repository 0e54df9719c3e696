"""Huey tasks of the API (imported by `run_worker` as `flux_studio.api.tasks`)."""

from __future__ import annotations

from flux_studio.queues import light_queue


@light_queue.task()
def deliver_webhook_task(message_id: str, attempt: int) -> None:
    from flux_studio.api.delivery import deliver

    delay = deliver(message_id, attempt)
    if delay is not None:
        # Our own backoff (Huey's retries use a fixed delay): base, 2x, 4x ...
        deliver_webhook_task.schedule(args=(message_id, attempt + 1), delay=delay)
