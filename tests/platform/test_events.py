"""The live event path: who may watch, replay for late pages, live delivery, no duplicates."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.utils import timezone

from flux_studio import consumers, events
from flux_studio import relay as relay_module
from flux_studio.asgi import application
from flux_studio.models import Event
from flux_studio.relay import relay
from flux_studio.routing import websocket_urlpatterns
from tests.conftest import LOGIN_ENDINGS, end_login

from .test_relay_gaps import ids_until as _ids_until
from .test_relay_gaps import one_event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

router = URLRouter(websocket_urlpatterns)


def _connect(user, path: str) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(router, path)
    communicator.scope["user"] = user
    return communicator


async def _receive_until(communicator: WebsocketCommunicator, kind: str, timeout: float = 5) -> list[dict]:
    seen = []
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        seen.append(message)
        if message["kind"] == kind:
            return seen


def test_owner_only(alice, bob):
    from django.contrib.auth.models import AnonymousUser

    async def scenario():
        for user in (AnonymousUser(), bob):
            communicator = _connect(user, f"/ws/events/user/{alice.pk}/")
            connected, code = await communicator.connect()
            assert not connected and code == 4403
        communicator = _connect(alice, f"/ws/events/user/{alice.pk}/")
        connected, _ = await communicator.connect()
        assert connected
        await communicator.disconnect()
        unknown = _connect(alice, "/ws/events/nosuchkind/1/")
        assert (await unknown.connect())[0] is False
        for path in ("/ws/jobs/1/", "/anything"):  # no route: refused as a 404 would be, not an error
            assert await WebsocketCommunicator(application, path, headers=[(b"origin", b"http://127.0.0.1")]).connect() \
                == (False, 4404)

    async_to_sync(scenario)()


def test_bob_cannot_watch_alices_training(alice, bob, make_dataset, monkeypatch):
    from trainer import jobs

    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    events.publish(job.topic, "log", {"line": "alice's private progress"})

    async def scenario():
        connected, code = await _connect(bob, f"/ws/events/training/{job.pk}/").connect()
        assert not connected and code == 4403
        owner = _connect(alice, f"/ws/events/training/{job.pk}/")
        assert (await owner.connect())[0]
        replay = await _receive_until(owner, "replayed")
        assert replay[0]["data"]["line"] == "alice's private progress"
        await owner.disconnect()
        await relay.stop()

    async_to_sync(scenario)()


def test_late_page_gets_replay_then_live_events_once_each_in_order(alice):
    topic = f"user-{alice.pk}"
    first = events.publish(topic, "log", {"line": "one"})
    events.publish(topic, "log", {"line": "two"})

    async def scenario():
        communicator = _connect(alice, f"/ws/events/user/{alice.pk}/")
        assert (await communicator.connect())[0]
        replay = await _receive_until(communicator, "replayed")
        assert [m["data"].get("line") for m in replay[:-1]] == ["one", "two"]
        # Live: a new event written by "another process" (straight to the table) arrives once.
        await sync_to_async(events.publish)(topic, "log", {"line": "three"})
        live = await communicator.receive_json_from(timeout=5)
        assert live["data"]["line"] == "three"
        assert await communicator.receive_nothing(timeout=settings.EVENTS_POLL_SECONDS * 4)
        await communicator.disconnect()
        # Reconnecting after the first event replays only what came after it.
        again = _connect(alice, f"/ws/events/user/{alice.pk}/?after={first.id}")
        assert (await again.connect())[0]
        replay = await _receive_until(again, "replayed")
        assert [m["data"].get("line") for m in replay[:-1]] == ["two", "three"]
        await again.disconnect()
        await relay.stop()

    async_to_sync(scenario)()


def test_replay_longer_than_one_page_is_complete_before_replayed(alice, monkeypatch):
    monkeypatch.setattr(events, "REPLAY_PAGE", 7)
    topic = f"user-{alice.pk}"
    for i in range(23):
        events.publish(topic, "progress", {"step": i})

    async def scenario():
        communicator = _connect(alice, f"/ws/events/user/{alice.pk}/")
        assert (await communicator.connect())[0]
        replay = await _receive_until(communicator, "replayed")
        assert [m["data"]["step"] for m in replay[:-1]] == list(range(23))
        await communicator.disconnect()
        await relay.stop()

    async_to_sync(scenario)()


def test_burst_to_many_sockets_delivers_everything(alice):
    topic = f"user-{alice.pk}"

    async def scenario():
        sockets = [_connect(alice, f"/ws/events/user/{alice.pk}/") for _ in range(10)]
        for s in sockets:
            assert (await s.connect())[0]
            await _receive_until(s, "replayed")
        for i in range(50):
            await sync_to_async(events.publish)(topic, "progress", {"step": i})
        for s in sockets:
            steps = [(await s.receive_json_from(timeout=5))["data"]["step"] for _ in range(50)]
            assert steps == list(range(50))
            await s.disconnect()
        await relay.stop()

    async_to_sync(scenario)()


def _browser_socket(client, user) -> WebsocketCommunicator:
    """The full ASGI stack's socket for `user`'s own topic, opened as `client`'s browser would (its
    session cookie, this site's origin)."""
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    return WebsocketCommunicator(application, f"/ws/events/user/{user.pk}/",
                                 headers=[(b"cookie", cookie), (b"origin", b"http://localhost")])


def test_full_asgi_stack_authenticates_with_the_session_cookie(client, alice):
    communicator = _browser_socket(client, alice)

    async def scenario():
        assert (await communicator.connect())[0]
        await _receive_until(communicator, "replayed")
        await communicator.disconnect()
        stranger = WebsocketCommunicator(application, f"/ws/events/user/{alice.pk}/", headers=[(b"origin", b"http://localhost")])
        assert (await stranger.connect())[0] is False
        await relay.stop()

    async_to_sync(scenario)()


@pytest.mark.parametrize("ends_it", LOGIN_ENDINGS)
def test_an_open_socket_closes_once_its_login_no_longer_holds(client, alice, ends_it, monkeypatch):
    monkeypatch.setattr(consumers, "RECHECK_S", 0.2)
    page = _browser_socket(client, alice)

    async def scenario():
        assert (await page.connect())[0]
        await _receive_until(page, "replayed")
        assert await page.receive_nothing(timeout=0.6)  # checked a few times: still signed in, stays open
        await sync_to_async(end_login)(ends_it, alice, client)
        assert await page.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}
        await relay.stop()

    async_to_sync(scenario)()


def test_an_open_socket_closes_once_its_training_is_deleted(alice, make_dataset, monkeypatch):
    from trainer import jobs
    from trainer.models import JobState

    monkeypatch.setattr(consumers, "RECHECK_S", 0.2)
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")

    async def scenario():
        page = _connect(alice, f"/ws/events/training/{job.pk}/")
        assert (await page.connect())[0]
        await _receive_until(page, "replayed")
        assert await page.receive_nothing(timeout=0.6)
        await sync_to_async(lambda: (type(job).objects.filter(pk=job.pk).update(state=JobState.CANCELED),
                                     jobs.job_delete(job=job)))()
        assert await page.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}
        await relay.stop()

    async_to_sync(scenario)()


@pytest.fixture
def publisher_sends_live(monkeypatch) -> None:
    """The scaled shape's live path: the publisher hands each event to the channel layer itself.

    Redis in the scaled-out run; elsewhere the in-memory layer with no relay stands in for it.
    """
    if not events.layer_is_shared():
        monkeypatch.setattr(events, "layer_is_shared", lambda: True)
        monkeypatch.setattr(consumers, "layer_is_shared", lambda: True)


@sync_to_async
def _late_publish(event_id: int, topic: str) -> None:
    """What `publish` does, for an id taken earlier whose transaction commits now."""
    event = Event.objects.create(id=event_id, topic=topic, kind="log", data={"line": f"row {event_id}"})
    async_to_sync(events.get_channel_layer().group_send)(
        events.group_name(topic), {"type": "event.message", "event": event.as_message()}
    )


def test_page_opened_while_a_lower_id_is_uncommitted_gets_every_event_once_in_order(alice, publisher_sends_live,
                                                                                    monkeypatch):
    # PostgreSQL: base+1 is taken, then base+2 commits and goes live before the page opens.
    topic, base = one_event(alice, monkeypatch, 10.0)  # the gap fills well within it
    async_to_sync(_late_publish)(base + 2, topic)

    async def scenario():
        page = _connect(alice, f"/ws/events/user/{alice.pk}/")
        assert (await page.connect())[0]
        received = await _ids_until(page, 0, timeout=settings.EVENTS_POLL_SECONDS * 4)
        await _late_publish(base + 1, topic)
        received += await _ids_until(page, 0, timeout=5)
        assert received == [base, base + 1, base + 2, 0]  # 0: "replayed"
        assert await page.receive_nothing(timeout=settings.EVENTS_POLL_SECONDS * 4)  # base+1 live: not twice
        await page.disconnect()

    async_to_sync(scenario)()


def test_an_event_written_in_a_transaction_goes_live_only_if_it_commits(alice, publisher_sends_live):
    from django.db import transaction

    topic = f"user-{alice.pk}"

    class Undo(Exception):
        pass

    def write() -> None:
        try:
            with transaction.atomic():
                events.publish(topic, "log", {"line": "rolled back"})
                raise Undo
        except Undo:
            pass
        with transaction.atomic():
            events.publish(topic, "log", {"line": "committed"})

    async def scenario():
        page = _connect(alice, f"/ws/events/user/{alice.pk}/")
        assert (await page.connect())[0]
        await _receive_until(page, "replayed")
        await sync_to_async(write)()
        live = await page.receive_json_from(timeout=5)
        assert live["data"]["line"] == "committed"  # the rolled-back event never reached the page
        assert await page.receive_nothing(timeout=settings.EVENTS_POLL_SECONDS * 4)
        await page.disconnect()

    async_to_sync(scenario)()


def test_replay_waits_for_a_gap_that_never_fills_only_for_the_grace(alice, publisher_sends_live, monkeypatch):
    grace = 2.5  # long beside the replay's 0.15 s passes, so a busy machine's slow queries do not matter
    topic, base = one_event(alice, monkeypatch, grace)
    async_to_sync(_late_publish)(base + 2, topic)  # base+1 was rolled back: it never commits

    async def scenario():
        loop = asyncio.get_running_loop()
        started = loop.time()
        page = _connect(alice, f"/ws/events/user/{alice.pk}/")
        assert (await page.connect())[0]
        assert await _ids_until(page, 0, timeout=grace + 5) == [base, base + 2, 0]
        assert loop.time() - started < grace + 1.5, "one grace, not two"
        await page.disconnect()

    async_to_sync(scenario)()


def test_replay_waits_at_most_twice_the_grace_when_writers_clocks_disagree(alice, publisher_sends_live, monkeypatch):
    grace = 2.5  # long beside the replay's 0.15 s passes, so a busy machine's slow queries do not matter
    topic, base = one_event(alice, monkeypatch, grace)
    # base+1 never commits; base+2 comes from a writer whose clock runs a minute ahead, so its gap
    # looks young all along; base+3 from another writer, before the page opens.
    async_to_sync(_late_publish)(base + 2, topic)
    Event.objects.filter(id=base + 2).update(created_at=timezone.now() + timedelta(seconds=60))
    async_to_sync(_late_publish)(base + 3, topic)

    async def scenario():
        loop = asyncio.get_running_loop()
        started = loop.time()
        page = _connect(alice, f"/ws/events/user/{alice.pk}/")
        assert (await page.connect())[0]
        assert await _ids_until(page, 0, timeout=2 * grace + 5) == [base, base + 2, base + 3, 0]
        assert loop.time() - started < 2 * grace + 1.5, "the writer's clock a minute ahead must not hold it a minute"
        await page.disconnect()

    async_to_sync(scenario)()
