"""A GPU worker's housekeeping: run at start, then repeated from the heartbeat thread."""

from __future__ import annotations

import threading
import time

from flux_studio import worker


def test_a_gpu_workers_heartbeat_thread_repeats_its_housekeeping_and_survives_a_failing_hook(settings, monkeypatch):
    settings.WORKER_HEARTBEAT_SECONDS = 0.02
    ran: list[str] = []
    tick = threading.Event()

    def broken() -> None:
        raise OSError("disk gone")

    def counted() -> None:
        ran.append("swept")
        if len(ran) >= 3:
            tick.set()

    monkeypatch.setattr(worker, "_housekeeping", [(broken, 0.0), (counted, 0.0)])
    stop = threading.Event()
    thread = worker.start_heartbeat_thread(stop, housekeeping=True)
    try:
        assert tick.wait(10), "housekeeping did not repeat"
    finally:
        stop.set()
        thread.join(5)
    light_stop = threading.Event()
    before = len(ran)
    light = worker.start_heartbeat_thread(light_stop)  # a light worker: heartbeats only
    time.sleep(0.2)
    light_stop.set()
    light.join(5)
    assert len(ran) == before
