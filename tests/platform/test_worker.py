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


def test_healthz_reports_each_part_and_the_worker(start_worker, client):
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
    assert row["queue"] == "gpu" and row["device"] == "cpu" and row["alive"]
    assert str(worker.pid) in row["id"]
