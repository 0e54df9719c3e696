"""Health of each part of the studio, for /healthz and the operator."""

from __future__ import annotations

import time
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


# A probe every few seconds (load balancer, Kubernetes) must not mean an S3 write, read and
# delete each time: the storage round trip is made at most once per STORAGE_CHECK_SECONDS per
# process, and its answer (success or failure) reused meanwhile.
STORAGE_CHECK_SECONDS = 30.0
_storage_checked: dict[str, Any] = {}


def _storage_cached() -> dict[str, Any]:
    now = time.monotonic()
    if not _storage_checked or now - _storage_checked["at"] >= STORAGE_CHECK_SECONDS:
        _storage_checked.update(at=now, result=_check(_storage))
    return {**_storage_checked["result"], "checked_s_ago": round(now - _storage_checked["at"], 1)}


def forget_storage_check() -> None:
    _storage_checked.clear()


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


# What anyone may read: whether each part works, and each worker's queue, GPU name and last
# heartbeat. Error texts (connection strings, hosts), worker ids (hostname and pid) and current
# tasks (job ids) are for staff only.
PUBLIC_KEYS = {"ok", "workers"}
PUBLIC_WORKER_KEYS = {"queue", "device", "last_heartbeat", "seconds_ago", "alive"}


def _public(part: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in part.items() if k in PUBLIC_KEYS}
    if "workers" in shown:
        shown["workers"] = [{k: v for k, v in w.items() if k in PUBLIC_WORKER_KEYS} for w in shown["workers"]]
    return shown


def health_report(*, detailed: bool = False) -> dict[str, Any]:
    report = {
        "database": _check(_database),
        "queue": _check(_queue),
        "channel_layer": _check(_channel_layer),
        "storage": _storage_cached(),
        "worker": _check(_workers),
    }
    ok = all(part["ok"] for part in report.values())
    if not detailed:
        report = {name: _public(part) for name, part in report.items()}
    return {**report, "ok": ok}
