"""A web request enqueues work; a separate worker process runs it; its event reaches a socket.

Runs in both shapes: embedded (SQLite queue, events table relay) and scaled out (Redis queue,
Redis channel layer), so the same assertions prove both deployments.
"""

from __future__ import annotations

import os

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.urls import reverse

from flux_studio.relay import relay
from flux_studio.routing import websocket_urlpatterns
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.services]


def test_task_from_a_request_runs_in_a_worker_process_and_reaches_the_socket(start_worker, client, alice):
    worker = start_worker("gpu")
    client.force_login(alice)

    async def scenario() -> dict:
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/events/user/{alice.pk}/")
        communicator.scope["user"] = alice
        assert (await communicator.connect())[0]
        while (await communicator.receive_json_from(timeout=5))["kind"] != "replayed":
            pass
        from asgiref.sync import sync_to_async

        response = await sync_to_async(client.post)(reverse("worker_ping"))
        assert response.status_code == 202
        nonce = response.json()["nonce"]
        while True:  # the worker needs a few seconds to import Django and start consuming
            message = await communicator.receive_json_from(timeout=90)
            if message["kind"] == "pong" and message["data"]["nonce"] == nonce:
                break
        await communicator.disconnect()
        await relay.stop()
        return message["data"]

    pong = async_to_sync(scenario)()
    assert pong["pid"] == worker.pid != os.getpid(), worker.output()
    assert pong["device"] == "cpu"


def test_healthz_reports_each_part_and_the_worker(start_worker, client, django_user_model):
    response = client.get(reverse("healthz"))
    body = response.json()
    assert response.status_code == 503 and body["worker"]["ok"] is False
    assert body["database"]["ok"] and body["queue"]["ok"] and body["channel_layer"]["ok"] and body["storage"]["ok"]

    worker = start_worker("gpu")

    def healthy():
        r = client.get(reverse("healthz"))
        return r.status_code == 200 and r.json()

    body = wait_for(healthy, timeout=90, message="worker never reported healthy:\n" + worker.output())
    (row,) = body["worker"]["workers"]
    assert row["queue"] == "gpu" and row["device"] == "cpu" and row["alive"] and row["last_heartbeat"]
    # Anyone may probe it, so it names no host, pid or task: part states only.
    assert "id" not in row and "current_task" not in row
    assert all(set(part) <= {"ok", "workers"} for name, part in body.items() if name != "ok")
    # Staff see the details (worker id with host and pid, current task, backends).
    staff = django_user_model.objects.create_user("ops", password="pw-ops-123", is_staff=True)
    client.force_login(staff)
    (detail,) = client.get(reverse("healthz")).json()["worker"]["workers"]
    assert str(worker.pid) in detail["id"] and "current_task" in detail


def test_healthz_probes_do_not_write_to_storage_each_time(transactional_db, client, monkeypatch):
    from django.core.files.storage import default_storage

    from flux_studio import health

    writes: list[str] = []
    save = default_storage.save
    monkeypatch.setattr(default_storage, "save", lambda name, content, **kw: writes.append(name) or save(name, content, **kw))
    health.forget_storage_check()
    for _ in range(5):
        assert client.get(reverse("healthz")).json()["storage"]["ok"]
    assert len(writes) == 1, "one storage round trip per STORAGE_CHECK_SECONDS, not one per probe"
    monkeypatch.setattr(health, "STORAGE_CHECK_SECONDS", 0)
    client.get(reverse("healthz"))
    assert len(writes) == 2


def test_each_task_starts_on_a_usable_database_connection(transactional_db, alice, monkeypatch):
    """A connection that failed (the database went away) is replaced before the next task runs."""
    from django.db import connection

    from flux_studio.models import Event
    from flux_studio.queues import gpu_queue
    from flux_studio.tasks import worker_ping_task

    connection.ensure_connection()
    broken = connection.connection
    connection.errors_occurred = True
    monkeypatch.setattr(connection, "is_usable", lambda: False)
    gpu_queue.execute(worker_ping_task.s(alice.pk, "after-restart"))
    assert connection.connection is not broken
    assert Event.objects.filter(kind="pong", data__nonce="after-restart").exists()


def test_worker_tasks_go_on_after_the_database_drops_their_connections(start_worker, client, alice):
    """Scaled out: terminating the worker's PostgreSQL sessions stands in for a database restart."""
    from django.db import connection

    from flux_studio.models import Event

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (FLUX_TEST_SHAPE=scaled)")
    worker = start_worker("gpu")
    client.force_login(alice)

    def ping() -> None:
        nonce = client.post(reverse("worker_ping")).json()["nonce"]
        wait_for(lambda: Event.objects.filter(kind="pong", data__nonce=nonce).exists(), timeout=90,
                 message="no pong:\n" + worker.output()[-3000:])

    ping()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    ping()
