"""Health of each part of the studio, for /healthz and the operator."""

from __future__ import annotations

import uuid
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.utils import timezone

from flux_studio.models import WorkerHeartbeat
from flux_studio.queues import gpu_queue, light_queue


def _check(fn: Any) -> dict[str, Any]:
    try:
        return {"ok": True, **(fn() or {})}
    except Exception as exc:  # a health check reports failures, it does not raise them
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"vendor": connection.vendor}


def _queue() -> dict[str, Any]:
    return {
        "backend": "redis" if settings.REDIS_URL else "sqlite",
        "pending": {"gpu": gpu_queue.pending_count(), "light": light_queue.pending_count()},
    }


def _channel_layer() -> dict[str, Any]:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.send)(channel, {"type": "health.ping"})
    message = async_to_sync(layer.receive)(channel)
    if message.get("type") != "health.ping":
        raise RuntimeError("channel layer returned a different message")
    return {"backend": type(layer).__name__}


def _storage() -> dict[str, Any]:
    name = default_storage.save(f"healthz/{uuid.uuid4().hex}.txt", ContentFile(b"ok"))
    try:
        with default_storage.open(name) as fh:
            if fh.read() != b"ok":
                raise RuntimeError("storage returned different bytes")
    finally:
        default_storage.delete(name)
    return {"backend": settings.STORAGES["default"]["BACKEND"].rsplit(".", 1)[-1]}


def _workers() -> dict[str, Any]:
    now = timezone.now()
    rows = WorkerHeartbeat.objects.order_by("queue", "worker_id")
    workers = [
        {
            "id": w.worker_id,
            "queue": w.queue,
            "device": w.device,
            "current_task": w.current_task,
            "last_heartbeat": w.last_seen.isoformat(),
            "seconds_ago": round((now - w.last_seen).total_seconds(), 1),
            "alive": (now - w.last_seen).total_seconds() < settings.WORKER_STALE_SECONDS,
        }
        for w in rows
    ]
    gpu_alive = any(w["alive"] and w["queue"] == "gpu" for w in workers)
    return {"ok": gpu_alive, "workers": workers, **({} if gpu_alive else {"error": "no live gpu-queue worker"})}


def health_report() -> dict[str, Any]:
    report = {
        "database": _check(_database),
        "queue": _check(_queue),
        "channel_layer": _check(_channel_layer),
        "storage": _check(_storage),
        "worker": _check(_workers),
    }
    report["ok"] = all(part["ok"] for part in report.values() if isinstance(part, dict))
    return report
