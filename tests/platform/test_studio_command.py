"""`manage.py studio` (what `make run` starts): web server and workers together, one Ctrl-C stops all."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow


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
