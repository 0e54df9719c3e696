"""Start the whole studio on one machine: the ASGI server and both task workers.

    python manage.py studio --host 127.0.0.1 --port 8000

Each part runs as its own process (the web server never imports torch; the GPU worker does).
Ctrl-C or SIGTERM stops them all. A worker that dies (killed, out of memory) is started again,
and the new one resumes the training it was running from its checkpoint (a generation it was
running is ended with the reason: generating again is the recovery); one that keeps dying
(MAX_RESTARTS within RESTART_WINDOW_S), or the web server dying, stops the rest and the command
exits with an error, so a supervisor can restart the set.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import deque

from django.core.management.base import BaseCommand, CommandError, CommandParser

MAX_RESTARTS = 5
RESTART_WINDOW_S = 120.0


class Command(BaseCommand):
    help = "Run the web server (HTTP + WebSocket) and the task workers together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="web server only (workers run elsewhere)")

    def handle(self, *args: object, host: str, port: int, no_worker: bool, **options: object) -> None:
        manage = [sys.executable, "manage.py"]
        commands = {"web": [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "flux_studio.asgi:application"]}
        if not no_worker:
            commands["gpu-worker"] = [*manage, "run_worker", "--queue", "gpu", "--workers", "1"]
            commands["light-worker"] = [*manage, "run_worker", "--queue", "light", "--workers", "2"]
        # Own process groups: a terminal Ctrl-C reaches only this command, which then asks each
        # child once (a second SIGINT would make Huey abandon its graceful shutdown).
        procs = {name: subprocess.Popen(cmd, start_new_session=True) for name, cmd in commands.items()}
        self.stdout.write(f"FLUX Studio at http://{host}:{port}/  ({', '.join(procs)}; Ctrl-C stops all)")
        stopping = {"signal": 0}

        def request_stop(signum: int, frame: object) -> None:
            stopping["signal"] = signum

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        failed = ""
        restarts: dict[str, deque[float]] = {name: deque(maxlen=MAX_RESTARTS) for name in procs}
        while not stopping["signal"] and not failed:
            for name, proc in list(procs.items()):
                if proc.poll() is None:
                    continue
                exited, recent = f"{name} exited with code {proc.returncode}", restarts[name]
                if name == "web":
                    failed = exited
                    break
                if len(recent) == MAX_RESTARTS and time.monotonic() - recent[0] < RESTART_WINDOW_S:
                    failed = f"{exited}, its {MAX_RESTARTS + 1}th exit within {RESTART_WINDOW_S:.0f} s"
                    break
                self.stderr.write(f"{exited}; starting it again (a training it ran resumes from its checkpoint)")
                recent.append(time.monotonic())
                procs[name] = subprocess.Popen(commands[name], start_new_session=True)
            time.sleep(0.3)
        self._stop_all(procs)
        if failed:
            raise CommandError(f"{failed}; stopped the rest")

    def _stop_all(self, procs: dict[str, subprocess.Popen]) -> None:
        for name, proc in procs.items():
            if proc.poll() is None:
                # Workers: SIGINT is Huey's graceful stop (running trainings checkpoint and requeue).
                # Web: SIGTERM, which Twisted always handles (SIGINT may be ignored when inherited).
                proc.send_signal(signal.SIGTERM if name == "web" else signal.SIGINT)
        deadline = time.monotonic() + 60
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
