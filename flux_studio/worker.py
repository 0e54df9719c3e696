"""What a worker process does besides running tasks: heartbeats, shutdown, start-up recovery,
and whether another worker is still alive (`is_dead`: what it claimed will not finish).

Apps hook in through `on_worker_start` (e.g. the trainer re-queues jobs whose worker died),
through `housekeeping` for clean-ups a GPU worker also repeats while it runs (e.g. dropping the
local copies of a deleted training's LoRA), and read `shutting_down` from long tasks so a Ctrl-C or SIGTERM ends a training at a checkpoint
instead of killing it mid-step.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from flux_studio.models import WorkerHeartbeat

log = logging.getLogger("flux_studio.worker")

shutting_down = threading.Event()
_start_hooks: list[Callable[[], None]] = []
_housekeeping: list[tuple[Callable[[], None], float]] = []  # (hook, every N seconds)
_state: dict = {"worker_id": "", "current_task": "", "heartbeat": None}


def on_worker_start(hook: Callable[[], None]) -> Callable[[], None]:
    _start_hooks.append(hook)
    return hook


def housekeeping(every: float) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """A clean-up a GPU worker runs at start, after the start hooks, then every `every` seconds
    from its housekeeping thread (so also while a task runs: it must be safe alongside one)."""

    def register(hook: Callable[[], None]) -> Callable[[], None]:
        _housekeeping.append((hook, every))
        return hook

    return register


def _run(hook: Callable[[], None], what: str) -> None:
    try:
        hook()
    except Exception:
        log.exception("worker %s %s failed", what, getattr(hook, "__name__", hook))


def run_start_hooks() -> None:
    for hook in _start_hooks:
        _run(hook, "start hook")
    for hook, _ in _housekeeping:
        _run(hook, "housekeeping")


class HousekeepingClock:
    """When each housekeeping hook is next due; the first round is the one at start."""

    def __init__(self, now: float) -> None:
        self.due = {hook: now + every for hook, every in _housekeeping}

    def run_due(self, now: float) -> list[Callable[[], None]]:
        ran = []
        for hook, every in _housekeeping:
            if now >= self.due.get(hook, now + every):
                self.due[hook] = now + every
                _run(hook, "housekeeping")
                ran.append(hook)
        return ran


def detect_device() -> str:
    """The GPU this worker computes on, or 'cpu'. Only workers import torch."""
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return "cpu"


# Host and pid alone repeat after a container restart (pid 1 again, same hostname): the new worker
# would refresh the dead one's heartbeat row and its job would never be recovered. A random part
# drawn once per process makes every start a new worker.
_INSTANCE = uuid.uuid4().hex[:12]


def worker_id(queue: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{queue}:{_INSTANCE}"


def current_worker_id() -> str:
    """This process's worker id, or "inline" when a task body runs outside a worker (tests, shell)."""
    return _state["worker_id"] or "inline"


def current_heartbeat() -> int | None:
    """This worker's heartbeat row id, None outside a worker. What a task records to say who runs
    it where the person sees it: unlike the worker id, it names no host or process."""
    return _state["heartbeat"]


def set_current_task(description: str) -> None:
    _state["current_task"] = description[:255]
    beat()


def beat() -> None:
    if not _state["worker_id"]:
        return
    WorkerHeartbeat.objects.filter(worker_id=_state["worker_id"]).update(
        last_seen=timezone.now(), current_task=_state["current_task"]
    )


def register(queue: str, device: str) -> WorkerHeartbeat:
    _state["worker_id"] = worker_id(queue)
    row, _ = WorkerHeartbeat.objects.update_or_create(
        worker_id=_state["worker_id"],
        defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "queue": queue,
            "device": device,
            "last_seen": timezone.now(),
            "current_task": "",
        },
    )
    _state["heartbeat"] = row.pk
    return row


def unregister() -> None:
    if _state["worker_id"]:
        WorkerHeartbeat.objects.filter(worker_id=_state["worker_id"]).delete()
        _state["worker_id"] = ""
        _state["heartbeat"] = None


def start_heartbeat_thread(stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(settings.WORKER_HEARTBEAT_SECONDS):
            try:
                beat()
            except Exception:
                log.warning("heartbeat failed", exc_info=True)
            finally:
                close_old_connections()

    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    return thread


def start_housekeeping_thread(stop: threading.Event, tick: float = 30.0) -> threading.Thread:
    """A GPU worker's clean-ups after the first round (run at start), each when it is due. A
    thread of its own, so a slow one (a busy disk, a locked database) never holds up the
    heartbeat: a worker that stops beating has its running job taken over."""
    clock = HousekeepingClock(time.monotonic())

    def loop() -> None:
        while not stop.wait(tick):
            try:
                clock.run_due(time.monotonic())
            finally:
                close_old_connections()

    thread = threading.Thread(target=loop, name="housekeeping", daemon=True)
    thread.start()
    return thread


def is_alive(worker: str) -> bool:
    """Whether the worker with this id has beaten recently."""
    cutoff = timezone.now() - timezone.timedelta(seconds=settings.WORKER_STALE_SECONDS)
    return WorkerHeartbeat.objects.filter(worker_id=worker, last_seen__gte=cutoff).exists()


def heartbeat_is_dead(heartbeat: int) -> bool:
    """`is_dead` for the worker whose heartbeat row has this id (`current_heartbeat`); a row that
    is gone is a worker that stopped."""
    row = WorkerHeartbeat.objects.filter(pk=heartbeat).values_list("worker_id", flat=True).first()
    return row is None or is_dead(row)


def is_dead(worker: str) -> bool:
    """Whether the worker with this id is dead: no id, a heartbeat that is stale or gone, or a
    process that no longer exists on this host. What a dead worker claimed (a training, a
    captioning run) will not finish; what a live one claimed may only be slow."""
    if not worker:
        return True
    row = WorkerHeartbeat.objects.filter(worker_id=worker).first()
    if row is None or not is_alive(worker):
        return True
    if row.hostname == os.uname().nodename:
        if row.pid == os.getpid() and worker != current_worker_id():
            return True  # our pid, another worker id: a dead process before a restart reused the pid
        try:
            os.kill(row.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False
