"""Event latency from a worker process to WebSocket clients, and fan-out to many clients.

    python bench/event_latency.py                    # embedded shape (SQLite + events relay)
    python bench/event_latency.py --shape scaled     # PostgreSQL + Redis channel layer

A real daphne server and a separate "worker" process (which publishes through the same
`flux_studio.events.publish` the training hooks use) run against a throwaway database; clients
are real WebSocket connections with a logged-in session. Latency = client receive time minus
the publisher's timestamp taken just before `publish`. Prints p50/p95/max and delivery counts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(shape: str, data_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "S3_BUCKET")}
    env.update(DATA_DIR=data_dir, DJANGO_SETTINGS_MODULE="flux_studio.settings", PYTHONUNBUFFERED="1", LOG_LEVEL="WARNING")
    if shape == "scaled":
        env.update(DATABASE_URL="postgres://postgres@127.0.0.1:5432/flux_studio_bench", REDIS_URL="redis://127.0.0.1:6379/13")
    return env


def publish_main(topic: str, count: int, rate: float) -> None:
    """The 'worker': publish `count` events at `rate` per second, each stamped with its send time."""
    import django

    django.setup()
    from flux_studio.events import publish

    for i in range(count):
        publish(topic, "progress", {"step": i, "sent_at": time.time()})
        time.sleep(1 / rate)


def prepare(env: dict[str, str], shape: str) -> tuple[int, str]:
    """Migrate a fresh database and log a user in; returns (user id, session key)."""
    if shape == "scaled":
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", "DROP DATABASE IF EXISTS flux_studio_bench"], check=True)
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", "CREATE DATABASE flux_studio_bench"], check=True)
        import redis

        redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    code = (
        "import django; django.setup();"
        "from django.core.management import call_command; call_command('migrate', verbosity=0);"
        "from django.contrib.auth import get_user_model; from django.contrib.sessions.backends.db import SessionStore;"
        "u = get_user_model().objects.create_user('bench', password='x');"
        "s = SessionStore(); s['_auth_user_id'] = str(u.pk);"
        "s['_auth_user_backend'] = 'django.contrib.auth.backends.ModelBackend';"
        "s['_auth_user_hash'] = u.get_session_auth_hash(); s.create(); print(u.pk, s.session_key)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    user_id, key = out.split()[-2:]
    return int(user_id), key


async def clients_receive(port: int, user_id: int, session: str, clients: int, count: int, timeout: float) -> list[list[float]]:
    import websockets

    url = f"ws://127.0.0.1:{port}/ws/events/user/{user_id}/"
    headers = {"Cookie": f"sessionid={session}", "Origin": f"http://127.0.0.1:{port}"}
    sockets = [await websockets.connect(url, additional_headers=headers, max_size=None) for _ in range(clients)]
    for ws in sockets:  # wait for each replay to end before the publisher starts
        while '"replayed"' not in await ws.recv():
            pass

    async def collect(ws) -> list[float]:
        latencies: list[float] = []
        import json

        try:
            while len(latencies) < count:
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                if message["kind"] == "progress":
                    latencies.append(time.time() - message["data"]["sent_at"])
        except asyncio.TimeoutError:
            pass
        await ws.close()
        return latencies

    publisher = asyncio.create_subprocess_exec(sys.executable, __file__, "--publish", f"user-{user_id}", str(count),
                                               cwd=str(ROOT), env=os.environ.copy())
    tasks = [asyncio.create_task(collect(ws)) for ws in sockets]
    proc = await publisher
    results = await asyncio.gather(*tasks)
    await proc.wait()
    return results


def report(name: str, results: list[list[float]], expected: int) -> None:
    flat = sorted(x * 1000 for r in results for x in r)
    delivered = len(flat)
    if not flat:
        print(f"{name}: nothing delivered")
        return
    p50 = statistics.median(flat)
    p95 = flat[min(len(flat) - 1, int(len(flat) * 0.95))]
    print(f"{name}: delivered {delivered}/{expected * len(results)} p50={p50:.1f}ms p95={p95:.1f}ms max={flat[-1]:.1f}ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("embedded", "scaled"), default="embedded")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="events per second from the worker")
    parser.add_argument("--fanout", type=int, default=100, help="clients watching one object")
    parser.add_argument("--publish", nargs=2, metavar=("TOPIC", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        publish_main(args.publish[0], int(args.publish[1]), args.rate)
        return
    data_dir = tempfile.mkdtemp(prefix="flux-bench-")
    env = _env(args.shape, data_dir)
    os.environ.clear()
    os.environ.update(env)
    user_id, session = prepare(env, args.shape)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "flux_studio.asgi:application"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(150):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        print(f"shape={args.shape} events={args.events} rate={args.rate}/s")
        one = asyncio.run(clients_receive(port, user_id, session, 1, args.events, 15))
        report("1 client ", one, args.events)
        many = asyncio.run(clients_receive(port, user_id, session, args.fanout, args.events, 30))
        report(f"{args.fanout} clients", many, args.events)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
