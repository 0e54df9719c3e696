"""Embedded shape: carry worker events from the events table to this ASGI process's sockets.

A worker is another process, and the in-memory channel layer lives inside the ASGI process, so
the worker writes events to the database only. One relay per ASGI process polls the table every
EVENTS_POLL_SECONDS for rows newer than the last it saw and sends each to its topic's group on
the in-memory layer. One query serves every socket, however many watch, and delivery is in
order. (The SQLite-backed channel layers on PyPI lost or reordered messages across processes
when tried here; see DESIGN.md.)
"""

from __future__ import annotations

import asyncio
import json
import logging

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import Max

from flux_studio.events import group_name
from flux_studio.models import Event

log = logging.getLogger(__name__)

BATCH = 500


class EventRelay:
    def __init__(self) -> None:
        self.last_id = 0
        self.task: asyncio.Task | None = None

    async def ensure_running(self) -> None:
        """Start polling in this event loop, if not already.

        The starting point is read before returning, so a socket that replays the table after
        this call misses nothing: older rows come from its replay, newer ones from the relay.
        """
        loop = asyncio.get_running_loop()
        if self.task is not None and not self.task.done() and self.task.get_loop() is loop:
            return
        self.last_id = await database_sync_to_async(self._max_id)()
        self.task = loop.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.task = None

    async def _run(self) -> None:
        layer = get_channel_layer()
        while True:
            try:
                rows = await database_sync_to_async(self._fetch)(self.last_id)
                for event in rows:
                    message = event.as_message()
                    await layer.group_send(group_name(event.topic), {"type": "event.message", "event": message, "text": json.dumps(message)})
                    self.last_id = event.id
                if len(rows) == BATCH:
                    continue  # a burst: drain it before sleeping
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event relay poll failed; retrying")
            await asyncio.sleep(settings.EVENTS_POLL_SECONDS)

    @staticmethod
    def _max_id() -> int:
        return Event.objects.aggregate(m=Max("id"))["m"] or 0

    @staticmethod
    def _fetch(after_id: int) -> list[Event]:
        return list(Event.objects.filter(id__gt=after_id).order_by("id")[:BATCH])


relay = EventRelay()
