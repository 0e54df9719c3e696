"""Run a Huey consumer for one of the studio's queues, with heartbeats.

    python manage.py run_worker --queue gpu          # one per GPU (CUDA_VISIBLE_DEVICES=N)
    python manage.py run_worker --queue light -w 4   # webhooks and housekeeping
"""

from __future__ import annotations

import importlib
import logging
import threading

from django.apps import apps
from django.core.management.base import BaseCommand, CommandParser
from huey.consumer import Consumer

from flux_studio import worker
from flux_studio.queues import QUEUE_NAMES, queue_by_name

log = logging.getLogger("flux_studio.worker")


class StudioConsumer(Consumer):
    """Huey's consumer, told to wind long tasks down at a checkpoint when asked to stop."""

    def stop(self, graceful: bool = False) -> None:
        worker.shutting_down.set()
        super().stop(graceful=graceful)


def import_task_modules() -> None:
    for config in apps.get_app_configs():
        try:
            importlib.import_module(f"{config.name}.tasks")
        except ModuleNotFoundError as exc:
            if exc.name != f"{config.name}.tasks":
                raise


class Command(BaseCommand):
    help = "Run a task worker for the 'gpu' or 'light' queue."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", choices=QUEUE_NAMES, default="gpu")
        parser.add_argument("-w", "--workers", type=int, default=1, help="worker threads (keep 1 on 'gpu')")

    def handle(self, *args: object, queue: str, workers: int, **options: object) -> None:
        import_task_modules()
        huey = queue_by_name(queue)
        device = worker.detect_device() if queue == "gpu" else "cpu"
        worker.register(queue, device)
        log.info("worker %s serving queue %r on %s with %d thread(s)", worker.worker_id(queue), queue, device, workers)
        if queue == "gpu":
            worker.run_start_hooks()  # e.g. resume trainings whose worker died; housekeeping's first round
        stop = threading.Event()
        worker.start_heartbeat_thread(stop)
        if queue == "gpu":
            worker.start_housekeeping_thread(stop)
        consumer = StudioConsumer(huey, workers=workers, worker_type="thread", periodic=True, initial_delay=0.05, max_delay=0.5, backoff=1.1)
        try:
            consumer.run()
        finally:
            stop.set()
            worker.unregister()
