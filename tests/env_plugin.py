"""A pytest plugin (`-p tests.env_plugin`, set in pyproject) loaded before Django is set up.

It gives every test run a fresh DATA_DIR, so runs never touch the studio's own queues, media or
database. With FLUX_TEST_SHAPE=scaled it also points the studio at the scaled-out services: the
PostgreSQL and Redis servers on this machine, and an S3-compatible server (moto's server mode)
that it starts on a free loopback port, so file bytes really cross HTTP.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="flux-studio-test-"))
os.environ.setdefault("HUEY_IMMEDIATE", "0")
# Tests train the random `tiny` base (fastest); the `demo` base has its own tests.
os.environ.setdefault("DEFAULT_BASE_MODEL", "tiny")
# Test webhook receivers listen on loopback; production refuses such addresses by default.
os.environ.setdefault("WEBHOOK_ALLOW_PRIVATE", "1")

S3_BUCKET = "flux-studio-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_s3_server() -> str:
    port = _free_port()
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(proc.terminate)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    import boto3

    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=S3_BUCKET)
    return url


if os.environ.get("FLUX_TEST_SHAPE") == "scaled":
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/flux_studio")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
    if not os.environ.get("S3_ENDPOINT_URL"):
        os.environ["S3_ENDPOINT_URL"] = _start_s3_server()
        os.environ["S3_BUCKET"] = S3_BUCKET
        os.environ["S3_ACCESS_KEY_ID"] = "test"
        os.environ["S3_SECRET_ACCESS_KEY"] = "test"
        os.environ["S3_REGION"] = "us-east-1"
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
