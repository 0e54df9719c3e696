"""The studio's two Huey queues.

- `gpu_queue` runs captioning, training and generation. It is served by one consumer per GPU
  (`manage.py run_worker --queue gpu`, one worker thread), so a GPU never runs two jobs at once.
- `light_queue` runs work that needs no GPU (webhooks, housekeeping) so it never waits behind a
  training.

Embedded shape: each queue is a SQLite file in DATA_DIR. Scaled out (REDIS_URL set): Redis, so
workers on many machines consume the same queues.
"""

from __future__ import annotations

from django.conf import settings
from django.db import close_old_connections
from huey import Huey, PriorityRedisHuey
from huey.storage import SqliteStorage

QUEUE_NAMES = ("gpu", "light")


class ScrubbingSqliteStorage(SqliteStorage):
    """Huey's SQLite queue, which leaves no copy of a message on disk once it is taken.

    A message can carry a secret for its one run (a Hugging Face write token for a Hub push).
    SQLite keeps a deleted row's bytes in its free pages and in the write-ahead log until they
    are overwritten; here deletes zero them (secure_delete), and each taken message is followed by
    a checkpoint that truncates the log.
    """

    def _create_connection(self):  # type: ignore[no-untyped-def]
        conn = super()._create_connection()
        conn.execute("pragma secure_delete=on")
        return conn

    def dequeue(self):  # type: ignore[no-untyped-def]
        data = super().dequeue()
        if data is not None:
            # Best effort: a reader in the middle of a transaction can hold a log frame back
            # until the next message is taken.
            self.sql("pragma wal_checkpoint(truncate)")
        return data


def _make_queue(name: str) -> Huey:
    immediate = settings.HUEY_IMMEDIATE
    if settings.REDIS_URL:
        # The priority flavour: generations jump ahead of waiting trainings (SQLite supports it too).
        return PriorityRedisHuey(f"flux-studio-{name}", url=settings.REDIS_URL, immediate=immediate, utc=True)
    return Huey(
        f"flux-studio-{name}",
        storage_class=ScrubbingSqliteStorage,
        filename=str(settings.DATA_DIR / f"queue-{name}.sqlite3"),
        immediate=immediate,
        utc=True,
        timeout=30,
    )


def _close_old_connections(huey: Huey) -> None:
    """Give every task a usable database connection, as Django does around each request.

    Huey's worker threads live for days and Django never closes their connections for them:
    after a database restart, every later task would fail on the dead connection. Closing
    broken or expired ones before and after each task makes the next query reconnect. Skipped
    when tasks run inline (immediate mode), inside a request's or a test's transaction.
    """
    def close(*_: object) -> None:
        if not huey.immediate:
            close_old_connections()

    huey.pre_execute(name="close_old_connections")(close)
    huey.post_execute(name="close_old_connections")(close)


gpu_queue = _make_queue("gpu")
light_queue = _make_queue("light")
for _queue in (gpu_queue, light_queue):
    _close_old_connections(_queue)


def queue_by_name(name: str) -> Huey:
    return {"gpu": gpu_queue, "light": light_queue}[name]
