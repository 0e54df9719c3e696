"""The embedded queues keep a message on disk only while it waits: a Hub push carries the
person's write token as a task argument, and once a worker takes the task no copy may stay in
the SQLite file or its write-ahead log."""

from __future__ import annotations

from flux_studio import queues
from flux_studio.queues import ScrubbingSqliteStorage

SECRET = b"hf_" + b"WriteTokenOnlyForOnePush" * 3


def on_disk(folder) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file())


def test_a_taken_message_leaves_no_copy_on_disk(tmp_path):
    storage = ScrubbingSqliteStorage("light", filename=str(tmp_path / "queue.sqlite3"))
    storage.enqueue(b"push model 7 with " + SECRET, 0)
    storage.enqueue(b"a later message", 0)
    assert SECRET in on_disk(tmp_path)  # stored while it waits: a restart must not lose it
    assert storage.dequeue() == b"push model 7 with " + SECRET
    assert SECRET not in on_disk(tmp_path)
    assert storage.dequeue() == b"a later message"  # the queue goes on working


def test_the_embedded_queues_use_it(settings, tmp_path):
    settings.REDIS_URL, settings.HUEY_IMMEDIATE, settings.DATA_DIR = "", False, tmp_path
    assert isinstance(queues._make_queue("light").storage, ScrubbingSqliteStorage)
    assert isinstance(queues._make_queue("gpu").storage, ScrubbingSqliteStorage)
