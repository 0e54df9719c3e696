"""Shared fixtures: two users (alice owns things, bob must not see them), images, a real worker."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.WORK_DIR = tmp_path / "work"


@pytest.fixture(autouse=True)
def _no_rate_limit_across_tests(settings) -> None:
    """Each test's tokens and users get the same ids again (rolled-back rows), so their one-minute
    API rate windows would add up over the whole run; the limit's own test sets a low one."""
    settings.API_RATE_LIMIT_PER_MINUTE = 100_000


@pytest.fixture(autouse=True)
def _own_login_counters(monkeypatch, request) -> None:
    """Failed log-ins are counted in the cache for 5 minutes: each test counts its own (a shared
    cache, Redis in the scaled-out run, would carry one test's failures into the next)."""
    import hashlib

    test = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:16]  # a valid cache key for any test's id
    monkeypatch.setattr("flux_studio.views.LOGIN_COUNTERS", f"login-failures:{test}")


@pytest.fixture(autouse=True)
def _fresh_channel_layer() -> Iterator[None]:
    """Each test gets its own channel layer object.

    A server runs one event loop for its whole life; tests run each scenario in a new loop
    (async_to_sync). channels_redis keeps asyncio locks on the layer object, and a receive
    cancelled while it waits for one (a socket closed mid-receive) leaves that lock for good,
    bound to a loop that is gone: the next loop to wait on it raises "bound to a different event
    loop" inside the consumer, and its socket goes silent.
    """
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


class NoLocalPaths(Storage):
    """A storage without local paths, as S3 (Storage.path raises): files live in a dict."""

    files: dict[str, bytes] = {}

    def _save(self, name: str, content) -> str:  # type: ignore[no-untyped-def]
        self.files[name] = content.read()
        return name

    def _open(self, name: str, mode: str = "rb") -> ContentFile:
        return ContentFile(self.files[name], name=name)

    def exists(self, name: str) -> bool:
        return name in self.files

    def delete(self, name: str) -> None:
        self.files.pop(name, None)

    def size(self, name: str) -> int:
        return len(self.files[name])


@pytest.fixture
def remote_storage(settings) -> None:
    """Uploads go to remote-like storage: whatever needs a local file must copy it."""
    NoLocalPaths.files = {}
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": f"{__name__}.NoLocalPaths"}}


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "correct horse battery")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", "bob@example.com", "another horse battery")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(alice, bob):
    from django.test import Client

    c = Client()
    c.force_login(bob)
    return c


# The ways a signed-in browser's login stops holding, for the tests of long-lived connections.
LOGIN_ENDINGS = ("log out", "password changed", "account deactivated")


def end_login(how: str, user, client) -> None:  # type: ignore[no-untyped-def]
    """End `user`'s login in `client` (a django.test.Client) as `how` (one of LOGIN_ENDINGS) says."""
    if how == "log out":
        client.logout()
    elif how == "password changed":
        user.set_password("a new long password 2")
        user.save()
    elif how == "account deactivated":
        user.is_active = False
        user.save()
    else:
        raise ValueError(how)


def make_image_bytes(width: int = 600, height: int = 600, color: tuple[int, int, int] = (200, 80, 40),
                     fmt: str = "PNG", pattern: int = 0) -> bytes:
    """A real image with some structure (so perceptual hashes differ between patterns)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), color)
    draw = ImageDraw.Draw(img)
    step = max(8, width // (4 + pattern))
    for i in range(0, width, step):
        draw.rectangle([i, (i * (pattern + 1)) % height, i + step // 2, height], fill=((color[0] + 90 * (pattern + 1)) % 256, 40, 200))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def image_bytes() -> Callable[..., bytes]:
    return make_image_bytes


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_env() -> dict[str, str]:
    """Environment for a worker subprocess that shares this test's database and queues."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["DATABASE_URL"] = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    env["WORK_DIR"] = str(settings.WORK_DIR)
    env["WORKER_HEARTBEAT_SECONDS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    def __init__(self, queue: str, log_path: Path) -> None:
        self.queue = queue
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker", "--queue", self.queue],
            cwd=ROOT, env=_worker_env(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_worker(transactional_db, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real `manage.py run_worker` processes against the test database."""
    started: list[WorkerProcess] = []

    def start(queue: str = "gpu") -> WorkerProcess:
        worker = WorkerProcess(queue, tmp_path / f"worker-{queue}-{len(started)}.log").start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_for(condition: Callable[[], object], timeout: float = 60, interval: float = 0.2, message: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message or f"condition not met within {timeout}s")


@pytest.fixture
def make_dataset() -> Callable[..., object]:
    """A dataset of small real images with captions, stored like uploads are."""
    import hashlib

    from django.core.files.base import ContentFile

    from trainer.models import CaptionSource, Dataset, Photo

    def make(owner, n: int = 4, trigger: str = "zxq", size: int = 64, name: str = "pets") -> Dataset:
        dataset = Dataset.objects.create(owner=owner, name=name, trigger_word=trigger)
        for i in range(n):
            data = make_image_bytes(size, size, color=(40 * i % 256, 120, 200), pattern=i)
            photo = Photo(dataset=dataset, original_name=f"pet{i}.png", width=size, height=size, format="PNG",
                          size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                          caption=f"a photo of {trigger} on a mat, view {i}", caption_source=CaptionSource.USER)
            for field in ("original", "image", "thumbnail"):
                getattr(photo, field).save(f"pet{i}.png", ContentFile(data), save=False)
            photo.save()
        return dataset

    return make
