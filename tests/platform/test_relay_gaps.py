"""The embedded relay delivers in id order even when ids commit out of order (PostgreSQL).

A PostgreSQL id is taken at INSERT and the row appears at COMMIT, so a higher id can appear
first. Pages drop any event older than the last they saw, so the relay must hold the later rows
until the gap fills, and skip a gap that never fills (a rolled-back insert) after a short grace.
The same holds where the relay starts and where a page's replay ends. Rows with explicit ids
stand in for those commits here, so this runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.utils import timezone

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


def one_event(alice, monkeypatch, grace: float) -> tuple[str, int]:
    """Alice's topic holding one event, with GAP_GRACE_SECONDS set to `grace`: (topic, its id).

    Shared with test_events.py."""
    monkeypatch.setattr(relay_module, "GAP_GRACE_SECONDS", grace)
    topic = f"user-{alice.pk}"
    return topic, events.publish(topic, "log", {"line": "before"}).id


async def ids_until(communicator: WebsocketCommunicator, last: int, timeout: float) -> list[int]:
    """Ids the page receives until `last` (0 stands for "replayed"), or all within `timeout`.

    Shared with test_events.py."""
    ids, loop = [], asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (left := deadline - loop.time()) > 0:
        # receive_nothing, not a receive that times out: that would end the consumer.
        if await communicator.receive_nothing(timeout=min(left, 0.05)):
            continue
        ids.append((await communicator.receive_json_from()).get("id", 0))
        if ids[-1] == last:
            break
    return ids


def test_lower_id_committed_after_a_higher_one_reaches_the_page_in_order(alice, settings, monkeypatch):
    topic, base = one_event(alice, monkeypatch, 10.0)  # the gap fills well within it

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
    grace = 2.5  # long beside a poll (0.15 s), so a busy machine's slow queries do not matter
    topic, base = one_event(alice, monkeypatch, grace)

    async def scenario():
        page = await _watch(alice)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _commit(base + 2, topic)  # id base+1 was rolled back: it never commits
        assert await _ids(page, 1, timeout=grace + 5) == [base + 2]
        assert loop.time() - started < grace + 1.5, "one grace, not two"
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


def test_relay_started_while_a_lower_id_is_uncommitted_sends_it_in_order(alice, monkeypatch):
    topic, base = one_event(alice, monkeypatch, 10.0)  # the gap fills well within it
    async_to_sync(_commit)(base + 2, topic)  # id base+1 is taken but not committed yet

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(events.group_name(topic), channel)
        await relay.ensure_running()  # the newest row is base+2; base+1 is still to come
        await _commit(base + 1, topic)
        received = []
        for _ in range(2):
            try:
                received.append((await asyncio.wait_for(layer.receive(channel), timeout=3))["event"]["id"])
            except asyncio.TimeoutError:
                break
        assert received == [base + 1, base + 2]
        await relay.stop()

    async_to_sync(scenario)()


def test_page_opened_while_a_lower_id_is_uncommitted_gets_it_in_order(alice, settings, monkeypatch):
    topic, base = one_event(alice, monkeypatch, 10.0)  # the gap fills well within it

    async def scenario():
        await relay.ensure_running()  # already running when the gap opens (its start is the test above)
        await _commit(base + 2, topic)  # id base+1 is taken but not committed yet
        await asyncio.sleep(settings.EVENTS_POLL_SECONDS * 2)  # the relay has met the gap
        page = WebsocketCommunicator(router, f"/ws/events/user/{alice.pk}/")
        page.scope["user"] = alice
        assert (await page.connect())[0]
        received = await ids_until(page, 0, timeout=5)
        await _commit(base + 1, topic)
        received += await ids_until(page, base + 2, timeout=2)
        assert received == [base, 0, base + 1, base + 2]  # 0: "replayed", which stops before the gap
        assert await page.receive_nothing(timeout=settings.EVENTS_POLL_SECONDS * 4)  # base+2 not twice
        await page.disconnect()
        await relay.stop()

    async_to_sync(scenario)()


def test_settled_id_stops_before_the_first_gap_younger_than_the_grace(alice, monkeypatch):
    topic, base = one_event(alice, monkeypatch, 10.0)
    old = timezone.now() - timedelta(seconds=60)
    for offset in (2, 3, 5, 6):
        async_to_sync(_commit)(base + offset, topic)
    Event.objects.filter(id__in=[base, base + 2]).update(created_at=old)
    settled_id = relay_module.settled_id
    assert settled_id() == base + 3  # base+1 missing for a minute: past; base+4 missing, base+5 recent: open
    async_to_sync(_commit)(base + 4, topic)
    assert settled_id() == base + 6
    Event.objects.filter(id__gt=base).update(created_at=old)
    Event.objects.filter(id=base + 4).delete()
    assert settled_id() == base + 6  # a gap before an old row is past its grace
    Event.objects.all().delete()
    assert settled_id() == 0
