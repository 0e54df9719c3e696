"""Huey tasks of the gallery. A task only names what runs where; bodies live elsewhere."""

from __future__ import annotations

from huey import crontab

from flux_studio import worker
from flux_studio.queues import gpu_queue, light_queue

# Generations take seconds and a person is watching: they go ahead of queued trainings on the
# GPU queue (Huey runs higher priority first). A training already running is not interrupted.
GENERATION_PRIORITY = 10


@gpu_queue.task(priority=GENERATION_PRIORITY)
def generate_images_task(generation_id: int) -> None:
    from gallery.generation_run import run_generation

    run_generation(generation_id)


@light_queue.periodic_task(crontab(minute="*"))
def recover_orphaned_generations_task() -> None:
    from gallery.generation_run import recover_orphaned_generations

    recover_orphaned_generations()


@worker.on_worker_start
def _recover_on_start() -> None:
    from gallery.generation_run import recover_orphaned_generations

    recover_orphaned_generations()


@light_queue.task()
def hub_push_task(model_id: int, repo_id: str, token: str, private: bool = False) -> None:
    """Push a published model to the Hugging Face Hub (network I/O only, so the light queue)."""
    from gallery.hub import run_hub_push

    run_hub_push(model_id=model_id, repo_id=repo_id, token=token, private=private)


@worker.housekeeping(every=600)
def _sweep_lora_cache() -> None:
    from gallery.lora_cache import sweep

    sweep()  # copies of deleted trainings' LoRAs, broken links, abandoned partial copies; then to size
