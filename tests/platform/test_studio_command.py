"""`manage.py studio` (what `make run` starts): web server and workers together, one Ctrl-C stops all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import ROOT, free_port, wait_for

pytestmark = pytest.mark.slow


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
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(studio.pid)], capture_output=True, text=True).stdout.split()]
        assert len(children) == 3  # daphne, gpu worker, light worker
        studio.send_signal(signal.SIGINT)
        assert studio.wait(60) == 0
        for pid in children:
            wait_for(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
                     timeout=10, message=f"child {pid} still running after Ctrl-C")
    finally:
        if studio.poll() is None:
            studio.kill()
        log.close()
