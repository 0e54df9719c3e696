"""The one WebSocket endpoint: watch the events of one object, replayed then live.

On connect the consumer joins the topic's group first, then replays the stored events after the
`after` query parameter. Events that arrive live while the replay runs are queued by Channels
until connect returns, and any event already sent is dropped by id, so a page sees each event
once and in order, whether it opened early, late, or reconnected.

The replay must not pass an id that is still uncommitted (PostgreSQL shows a higher id before a
lower one commits; see flux_studio.relay): the lower one would come later and be dropped as
older, here and in the page. So the replay reads only up to a point below which nothing more
will appear, and the rest reaches the page by another way:

- Embedded shape: up to the relay's `sent_id`. Everything after it the relay has yet to send,
  and sends to this socket (already in the group) in id order, holding at gaps as it does.
- Redis: up to `settled_id`, the id before the first gap younger than the grace. Rows created
  after this socket joined its group are published to it live. Rows created before that only
  reach it by replay, so while any lie beyond the settled point the replay waits a poll and
  reads again; every such gap fills or outlasts its grace within GAP_GRACE_SECONDS of joining
  (timestamps come from the writers' clocks, so the wait is capped at twice that, after which
  the replay reads on past the gap).

An open socket asks every RECHECK_S whether its watcher may still watch: logged in with the same
session (not logged out, password unchanged, account active) and still allowed to see the object
(not deleted). When not, it closes with 4403, which the page takes as final.
"""

from __future__ import annotations

import asyncio
import logging
import json
from datetime import datetime
from typing import AsyncIterator
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from flux_studio import events
from flux_studio import relay as relay_module
from flux_studio.auth_checks import session_holds
from flux_studio.events import events_after, group_name, layer_is_shared, written_before
from flux_studio.relay import relay, settled_id
from flux_studio.topics import may_watch, topic_for

RECHECK_S = 15.0
log = logging.getLogger(__name__)


async def no_such_socket(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    """Any other WebSocket path: refuse the handshake (close code 4404, as a 404), with no channel
    layer and no "No route found" error, which reached the client as an HTTP 500."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 4404})


class EventsConsumer(AsyncJsonWebsocketConsumer):
    topic: str = ""
    last_id: int = 0
    _watchdog: asyncio.Task | None = None

    async def connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        kind, object_id = kwargs["kind"], int(kwargs["object_id"])
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(may_watch)(user, kind, object_id):
            await self.close(code=4403)
            return
        self.topic = topic_for(kind, object_id)
        await self.channel_layer.group_add(group_name(self.topic), self.channel_name)
        joined = timezone.now()
        if not layer_is_shared():
            await relay.ensure_running()
        await self.accept()
        await self._replay(self._after_param(), joined)
        # from here on the socket is open for as long as the page is: its watcher is asked again
        self._watchdog = asyncio.create_task(self._recheck(user, kind, object_id, self._session_key()))

    def _session_key(self) -> str | None:
        session = self.scope.get("session")
        return session.session_key if session is not None else None

    async def _recheck(self, user, kind: str, object_id: int, session_key: str | None) -> None:  # type: ignore[no-untyped-def]
        """Close the socket (4403) once its watcher may no longer watch; asked every RECHECK_S."""
        session_class = self.scope["session"].__class__ if session_key else None  # the store behind channels' LazyObject

        def still_allowed() -> bool:
            if session_class is not None and not session_holds(session_class, session_key, user.pk):
                return False
            return may_watch(user, kind, object_id)

        while True:
            await asyncio.sleep(RECHECK_S)
            try:
                allowed = await database_sync_to_async(still_allowed)()
            except Exception:  # the database away for a moment: ask again next time, the socket stays
                log.warning("could not re-check a watcher of %s", self.topic, exc_info=True)
                continue
            if not allowed:
                await self.close(code=4403)
                return

    def _after_param(self) -> int:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            return max(0, int(query.get("after", ["0"])[0]))
        except ValueError:
            return 0

    async def _replay(self, after: int, joined: datetime) -> None:
        self.last_id = after
        async for event in replay(self.topic, after, joined):
            await self._send_event(event)
        await self.send_json({"kind": "replayed", "data": {"last_id": self.last_id}})

    async def disconnect(self, code: int) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.topic:
            await self.channel_layer.group_discard(group_name(self.topic), self.channel_name)

    async def receive_json(self, content: dict, **kwargs: object) -> None:
        # Clients only listen; actions (cancel, edit) go through HTTP so they are authorised,
        # CSRF-checked and logged like every other write.
        if content.get("kind") == "ping":
            await self.send_json({"kind": "pong", "data": {}})

    async def event_message(self, message: dict) -> None:
        await self._send_event(message["event"], message.get("text"))

    async def _send_event(self, event: dict, text: str | None = None) -> None:
        if event["id"] <= self.last_id:
            return
        self.last_id = event["id"]
        # The relay encodes each event once for all its watchers; replayed events are encoded here.
        await self.send(text_data=text or json.dumps(event))


async def replay(topic: str, after: int, joined: datetime) -> AsyncIterator[dict]:
    """The stored events of `topic` after id `after`, in id order, as messages, up to the point
    from which live delivery takes over for a watcher that joined the topic's group at `joined`.

    Page by page: a long training writes tens of thousands of events. Shared by the WebSocket
    consumer and the API's event stream (flux_studio.api.streams).
    """
    shared = layer_is_shared()
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 2 * relay_module.GAP_GRACE_SECONDS  # a bound, should clocks disagree
    last_id = after
    while True:
        if not shared:
            upto: int | None = relay.sent_id
        elif loop.time() < give_up:
            upto = await database_sync_to_async(settled_id)()
        else:
            upto = None  # waited long enough: past the gap, as the relay goes after its grace
        page = await database_sync_to_async(events_after)(topic, last_id, upto=upto)
        for event in page:
            last_id = event.id
            yield event.as_message()
        if len(page) == events.REPLAY_PAGE:
            continue
        if not shared or upto is None:
            return
        if not await database_sync_to_async(written_before)(topic, max(last_id, upto), joined):
            return
        await asyncio.sleep(settings.EVENTS_POLL_SECONDS)  # a gap below rows only replay can bring
