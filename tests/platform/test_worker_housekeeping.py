"""A GPU worker's housekeeping: run at start, then repeated from a thread of its own."""

from __future__ import annotations

import threading

from flux_studio import worker


def test_housekeeping_repeats_and_survives_a_failing_hook(monkeypatch):
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
    thread = worker.start_housekeeping_thread(stop, tick=0.01)
    try:
        assert tick.wait(10), "housekeeping did not repeat"
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_a_hung_clean_up_does_not_stop_the_heartbeat(settings, monkeypatch):
    """A worker that stops beating has its running job taken over: a clean-up stuck on a busy disk
    must not do that."""
    settings.WORKER_HEARTBEAT_SECONDS = 0.01
    beats = threading.Semaphore(0)
    release, entered = threading.Event(), threading.Event()

    def stuck() -> None:
        entered.set()
        release.wait(10)

    monkeypatch.setattr(worker, "beat", beats.release)
    monkeypatch.setattr(worker, "_housekeeping", [(stuck, 0.0)])
    stop = threading.Event()
    threads = [worker.start_heartbeat_thread(stop), worker.start_housekeeping_thread(stop, tick=0.01)]
    try:
        assert entered.wait(10)
        for _ in range(5):  # beats go on while the clean-up hangs
            assert beats.acquire(timeout=5)
    finally:
        release.set()
        stop.set()
        for thread in threads:
            thread.join(5)
