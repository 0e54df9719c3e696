"""The one WebSocket endpoint: watch the events of one object, replayed then live.

On connect the consumer joins the topic's group first, then replays the stored events after the
`after` query parameter. Events that arrive live while the replay runs are queued by Channels
until connect returns, and any event already sent is dropped by id, so a page sees each event
once and in order, whether it opened early, late, or reconnected.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from flux_studio import events
from flux_studio.events import events_after, group_name, layer_is_shared
from flux_studio.relay import relay
from flux_studio.topics import may_watch, topic_for


class EventsConsumer(AsyncJsonWebsocketConsumer):
    topic: str = ""
    last_id: int = 0

    async def connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        kind, object_id = kwargs["kind"], int(kwargs["object_id"])
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(may_watch)(user, kind, object_id):
            await self.close(code=4403)
            return
        self.topic = topic_for(kind, object_id)
        await self.channel_layer.group_add(group_name(self.topic), self.channel_name)
        if not layer_is_shared():
            await relay.ensure_running()
        await self.accept()
        await self._replay(self._after_param())

    def _after_param(self) -> int:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            return max(0, int(query.get("after", ["0"])[0]))
        except ValueError:
            return 0

    async def _replay(self, after: int) -> None:
        # Page by page: a long training writes tens of thousands of events, and "replayed" must
        # only be sent once the page has seen all of them.
        self.last_id = cursor = after
        while True:
            page = await database_sync_to_async(events_after)(self.topic, cursor)
            for event in page:
                await self._send_event(event.as_message())
            if len(page) < events.REPLAY_PAGE:
                break
            cursor = page[-1].id
        await self.send_json({"kind": "replayed", "data": {"last_id": self.last_id}})

    async def disconnect(self, code: int) -> None:
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
