"""`manage.py studio` (what `make run` starts): web server and workers together, one Ctrl-C stops all.

The first test starts the real processes; the others drive the supervisor loop with fake processes,
a fake clock (its sleep only moves the clock) and no signal handlers installed in pytest.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from io import StringIO
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from flux_studio.management.commands import studio as studio_command

from tests.conftest import ROOT, free_port, wait_for


def children(pid: int) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def gpu_worker(pid: int) -> int | None:
    for child in children(pid):
        try:
            if b"--queue\x00gpu" in open(f"/proc/{child}/cmdline", "rb").read():
                return child
        except OSError:
            pass
    return None


@pytest.mark.slow
def test_studio_serves_http_with_live_workers_and_stops_on_ctrl_c(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "S3_BUCKET")}
    env.update(DATA_DIR=str(tmp_path), WORKER_HEARTBEAT_SECONDS="1", PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)
    port = free_port()
    log = open(tmp_path / "studio.log", "wb")
    studio = subprocess.Popen([sys.executable, "manage.py", "studio", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT)

    def healthy() -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return json.load(response)
        except OSError:
            return None

    try:
        report = wait_for(healthy, timeout=120, message=(tmp_path / "studio.log").read_text(errors="replace"))
        assert report["ok"] and {w["queue"] for w in report["worker"]["workers"]} == {"gpu", "light"}
        assert len(children(studio.pid)) == 3  # daphne, gpu worker, light worker

        # A worker killed (as by the out-of-memory killer) is started again; the studio stays up.
        killed = gpu_worker(studio.pid)
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: gpu_worker(studio.pid) not in (None, killed), timeout=30,
                 message=(tmp_path / "studio.log").read_text(errors="replace"))
        assert studio.poll() is None
        wait_for(lambda: (r := healthy()) and r["ok"], timeout=120, message="the new gpu worker never beat")
        assert "gpu-worker exited with code -9; starting it again" in (tmp_path / "studio.log").read_text()

        pids = children(studio.pid)
        studio.send_signal(signal.SIGINT)
        assert studio.wait(60) == 0
        for pid in pids:
            wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
                     timeout=10, message=f"child {pid} still running after Ctrl-C")
    finally:
        if studio.poll() is None:  # a failed check: its children (own sessions) must not outlive the test
            for pid in children(studio.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            studio.kill()
        log.close()


class FakeProcess:
    """A child of the studio: runs until its `lifetime` (seconds on the fake clock) is up, then has
    exited with `code`; a signal stops it at once."""

    def __init__(self, studio: FakeStudio, command: list[str]) -> None:
        self.studio, self.command = studio, command
        self.name = "web" if "daphne" in command else f"{command[command.index('--queue') + 1]}-worker"
        self.started_at, self.returncode, self.signals = studio.now, None, []
        self.lifetime, self.code = studio.lifetimes.get(self.name, (float("inf"), 0))

    def poll(self) -> int | None:
        if self.returncode is None and self.studio.now - self.started_at >= self.lifetime:
            self.returncode = self.code
        return self.returncode

    def send_signal(self, signum: int) -> None:
        assert self.poll() is None, f"{self.name} was signalled after it had exited"
        self.signals.append(signum)
        self.returncode = -signum

    def wait(self, timeout: float | None = None) -> int:
        assert self.returncode is not None, f"{self.name} was waited for without being stopped"
        return self.returncode

    def kill(self) -> None:
        raise AssertionError(f"{self.name} was killed: it had been waited for as if it ignored its signal")


class FakeStudio:
    """Runs `manage.py studio` against FakeProcess children and a clock that moves only when the
    command sleeps. `lifetimes` sets how long each part runs and its exit code; `every_sleep` is
    called after each sleep (to press Ctrl-C, say)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now, self.sleeps = 1000.0, 0
        self.lifetimes: dict[str, tuple[float, int]] = {}
        self.every_sleep: Callable[[], None] = lambda: None
        self.started: list[FakeProcess] = []
        self.handlers: dict[int, Callable] = {}
        self.stdout, self.stderr = StringIO(), StringIO()
        monkeypatch.setattr(studio_command, "subprocess", SimpleNamespace(
            Popen=self.popen, TimeoutExpired=subprocess.TimeoutExpired))
        monkeypatch.setattr(studio_command, "time", SimpleNamespace(monotonic=lambda: self.now, sleep=self.sleep))
        monkeypatch.setattr(studio_command, "signal", SimpleNamespace(
            SIGINT=signal.SIGINT, SIGTERM=signal.SIGTERM, signal=self.handlers.__setitem__))

    def popen(self, command: list[str], **kwargs: object) -> FakeProcess:
        assert kwargs == {"start_new_session": True}
        self.started.append(FakeProcess(self, command))
        return self.started[-1]

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        assert self.sleeps < 20_000, "the studio never stopped"
        self.now += seconds
        self.every_sleep()

    def run(self) -> None:
        call_command("studio", stdout=self.stdout, stderr=self.stderr)

    def starts(self, name: str) -> int:
        return sum(p.name == name for p in self.started)

    def last(self, name: str) -> FakeProcess:
        return [p for p in self.started if p.name == name][-1]


@pytest.fixture
def studio(monkeypatch: pytest.MonkeyPatch) -> FakeStudio:
    return FakeStudio(monkeypatch)


def test_a_worker_that_keeps_dying_stops_the_studio_with_an_error(studio):
    studio.lifetimes["gpu-worker"] = (0.0, -9)  # killed as soon as it starts, every time
    with pytest.raises(CommandError) as raised:
        studio.run()
    assert str(raised.value) == "gpu-worker exited with code -9, its 6th exit within 120 s; stopped the rest"
    assert studio.starts("gpu-worker") == 1 + studio_command.MAX_RESTARTS
    assert studio.stderr.getvalue().count("gpu-worker exited with code -9; starting it again") == studio_command.MAX_RESTARTS
    assert studio.starts("web") == studio.starts("light-worker") == 1
    # the rest is stopped: the web server with SIGTERM, the other worker with Huey's graceful SIGINT
    assert studio.last("web").signals == [signal.SIGTERM]
    assert studio.last("light-worker").signals == [signal.SIGINT]
    assert all(p.returncode is not None for p in studio.started), "a child still runs"


def test_a_worker_that_dies_now_and_then_is_always_started_again(studio):
    """Fewer exits than the limit within the window: a worker dying every 30 s is restarted for as
    long as it takes, until Ctrl-C stops the studio without an error."""
    studio.lifetimes["gpu-worker"] = (30.0, -9)
    ctrl_c = lambda: studio.handlers[signal.SIGINT](signal.SIGINT, None)  # noqa: E731
    studio.every_sleep = lambda: ctrl_c() if studio.starts("gpu-worker") == 20 else None
    studio.run()
    assert studio.starts("gpu-worker") == 20 and studio.starts("web") == studio.starts("light-worker") == 1
    assert studio.stderr.getvalue().count("gpu-worker exited with code -9; starting it again") == 19
    assert studio.last("gpu-worker").signals == studio.last("light-worker").signals == [signal.SIGINT]
    assert studio.last("web").signals == [signal.SIGTERM]


def test_a_worker_that_died_now_and_then_and_then_keeps_dying_still_stops_the_studio(studio):
    """Exits spread over a long time count for nothing once they are out of the window: a crash
    loop that starts later is stopped after as many restarts as one from a fresh start."""
    studio.lifetimes["gpu-worker"] = (200.0, -9)  # more than the window apart

    def crash_loop_from_the_11th_start() -> None:
        if studio.starts("gpu-worker") == 10:
            studio.lifetimes["gpu-worker"] = (0.0, -9)

    studio.every_sleep = crash_loop_from_the_11th_start
    with pytest.raises(CommandError, match="gpu-worker exited with code -9, its 6th exit within 120 s"):
        studio.run()
    assert studio.starts("gpu-worker") == 10 + studio_command.MAX_RESTARTS
    assert studio.last("web").signals == [signal.SIGTERM] and studio.last("light-worker").signals == [signal.SIGINT]


def test_the_web_server_exiting_stops_the_workers_with_an_error(studio):
    studio.lifetimes["web"] = (5.0, 1)
    with pytest.raises(CommandError) as raised:
        studio.run()
    assert str(raised.value) == "web exited with code 1; stopped the rest"
    assert studio.starts("web") == 1, "the web server is not started again"
    assert studio.last("gpu-worker").signals == studio.last("light-worker").signals == [signal.SIGINT]
    assert all(p.returncode is not None for p in studio.started), "a child still runs"
