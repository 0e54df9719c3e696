"""Platform tasks: a worker ping that proves the queue, the worker and live events connect."""

from __future__ import annotations

import os

from flux_studio import events, worker
from flux_studio.queues import gpu_queue


@gpu_queue.task()
def worker_ping_task(user_id: int, nonce: str) -> None:
    events.publish(f"user-{user_id}", "pong", {
        "nonce": nonce, "pid": os.getpid(), "worker": worker.current_worker_id(),
        "device": worker.detect_device(),
    })
