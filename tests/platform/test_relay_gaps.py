"""The embedded relay delivers in id order even when ids commit out of order (PostgreSQL).

A PostgreSQL id is taken at INSERT and the row appears at COMMIT, so a higher id can appear
first. Pages drop any event older than the last they saw, so the relay must hold the later rows
until the gap fills, and skip a gap that never fills (a rolled-back insert) after a short grace.
Rows with explicit ids stand in for those commits here, so this runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from flux_studio import events
from flux_studio import relay as relay_module
from flux_studio.models import Event
from flux_studio.relay import EventRelay, relay
from flux_studio.routing import websocket_urlpatterns

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

router = URLRouter(websocket_urlpatterns)


@pytest.fixture(autouse=True)
def _embedded_layer(settings):
    # The relay feeds the in-process layer; use it in the scaled-out run too, so it runs on PostgreSQL.
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


async def _watch(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(router, f"/ws/events/user/{user.pk}/")
    communicator.scope["user"] = user
    assert (await communicator.connect())[0]
    while (await communicator.receive_json_from(timeout=5))["kind"] != "replayed":
        pass
    return communicator


@sync_to_async
def _commit(event_id: int, topic: str) -> None:
    Event.objects.create(id=event_id, topic=topic, kind="log", data={"line": f"row {event_id}"})


async def _ids(communicator: WebsocketCommunicator, n: int, timeout: float = 5) -> list[int]:
    return [(await communicator.receive_json_from(timeout=timeout))["id"] for _ in range(n)]


def test_lower_id_committed_after_a_higher_one_reaches_the_page_in_order(alice, settings, monkeypatch):
    monkeypatch.setattr(relay_module, "GAP_GRACE_SECONDS", 10.0)  # the gap fills well within it
    topic = f"user-{alice.pk}"
    base = events.publish(topic, "log", {"line": "before"}).id

    async def scenario():
        page = await _watch(alice)
        await _commit(base + 2, topic)  # id base+1 is taken but not committed yet
        assert await page.receive_nothing(timeout=settings.EVENTS_POLL_SECONDS * 4)
        await _commit(base + 1, topic)
        assert await _ids(page, 2) == [base + 1, base + 2]
        await page.disconnect()
        await relay.stop()

    async_to_sync(scenario)()


def test_gap_that_never_fills_delays_delivery_only_for_the_grace(alice, settings, monkeypatch):
    grace = 1.0
    monkeypatch.setattr(relay_module, "GAP_GRACE_SECONDS", grace)
    topic = f"user-{alice.pk}"
    base = events.publish(topic, "log", {"line": "before"}).id

    async def scenario():
        page = await _watch(alice)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _commit(base + 2, topic)  # id base+1 was rolled back: it never commits
        assert await _ids(page, 1) == [base + 2]
        assert loop.time() - started < grace + 1.0
        # Past the skipped gap, delivery is live again: no second wait.
        started = loop.time()
        await _commit(base + 3, topic)
        assert await _ids(page, 1, timeout=grace) == [base + 3]
        assert loop.time() - started < grace
        await page.disconnect()
        await relay.stop()

    async_to_sync(scenario)()


def test_events_without_gaps_never_wait_for_the_grace(alice, monkeypatch):
    monkeypatch.setattr(relay_module, "GAP_GRACE_SECONDS", 30.0)  # any hold would time out below
    topic = f"user-{alice.pk}"

    async def scenario():
        page = await _watch(alice)  # an empty table: the relay starts from its first row, whatever its id
        written = [(await sync_to_async(events.publish)(topic, "progress", {"step": i})).id for i in range(5)]
        assert await _ids(page, 5, timeout=3) == written
        written = [(await sync_to_async(events.publish)(topic, "progress", {"step": i})).id for i in range(5, 10)]
        assert await _ids(page, 5, timeout=3) == written
        await page.disconnect()
        await relay.stop()

    async_to_sync(scenario)()


def test_ready_rows_stop_at_a_gap_until_it_fills_or_the_grace_ends():
    grace = relay_module.GAP_GRACE_SECONDS
    r = EventRelay()
    r.last_id = 10

    def ready(ids: list[int], now: float) -> list[int]:
        delivered = [e.id for e in r._ready([Event(id=i) for i in ids], now)]
        if delivered:
            r.last_id = delivered[-1]
        return delivered

    assert ready([11, 12, 14, 15], now=0.0) == [11, 12]  # held at the gap before 14
    assert ready([14, 15], now=grace - 0.1) == []  # the grace counts from when the gap was met
    assert ready([14, 15], now=grace) == [14, 15]  # 13 never came: skipped
    assert ready([17], now=10.0) == []
    assert ready([16, 17, 18], now=10.5) == [16, 17, 18]  # the gap filled: in order, at once
    assert r.gap_since is None
    assert ready([20], now=20.0) == []  # a new gap gets its own full grace
    assert ready([20], now=20.0 + grace - 0.1) == []
    assert ready([20, 21], now=20.0 + grace) == [20, 21]
