"""Embedded shape: carry worker events from the events table to this ASGI process's sockets.

A worker is another process, and the in-memory channel layer lives inside the ASGI process, so
the worker writes events to the database only. One relay per ASGI process polls the table every
EVENTS_POLL_SECONDS for rows newer than the last it saw and sends each to its topic's group on
the in-memory layer. One query serves every socket, however many watch, and delivery is in
order. (The SQLite-backed channel layers on PyPI lost or reordered messages across processes
when tried here; see DESIGN.md.)

Gaps in the ids: on PostgreSQL an id is taken from a sequence at INSERT but the row appears at
COMMIT, so id 11 can appear before id 10. Pages drop any event older than the last they saw,
so the relay must not pass 10 by. When the next row's id is not the last delivered id + 1, the
relay holds that row and every later one for up to GAP_GRACE_SECONDS (counted from when it
first meets the gap) while the missing ids commit, then delivers in order. A gap that outlasts
the grace (a rolled-back transaction leaves one for good) is skipped; a row that commits after
its gap was skipped is only in the table, for pages that load later. SQLite commits one write
at a time, so its ids appear in order and delivery there never waits.

Where it starts: `settled_id` applies the same rule to the table as it stands, with a row's
`created_at` for when its gap was met: it is the id before the first gap whose next row is
younger than the grace (else the newest id). A relay starts there rather than at the newest
id, so a lower id that commits just after the start still goes out, in order; the rows after
the starting point go out again, and sockets drop the ones they already have by id. A relay
that starts on an empty table takes the first row it sees as its starting point.

Sockets (flux_studio.consumers) replay the table up to `sent_id`, the last id the relay has
handed to the channel layer, and get everything after it from the relay: never past a gap the
relay is still holding. In the scaled shape there is no relay; the replay uses `settled_id`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from flux_studio.events import group_name
from flux_studio.models import Event

log = logging.getLogger(__name__)

BATCH = 500
GAP_GRACE_SECONDS = 2.0  # how long a missing id may hold back the rows after it


class EventRelay:
    def __init__(self) -> None:
        self.last_id = 0  # the last row delivered (or skipped past); the next poll reads after it
        self.sent_id = 0  # the last row handed to the channel layer: sockets replay up to here
        self.gap_since: float | None = None  # when the relay first met the gap it is holding at
        self.task: asyncio.Task | None = None

    async def ensure_running(self) -> None:
        """Start polling in this event loop, if not already.

        The starting point (`settled_id`) is read before returning, so a socket that joined its
        group and then replays the table up to `sent_id` misses nothing: rows up to it come from
        its replay, later ones from the relay.
        """
        loop = asyncio.get_running_loop()
        if self.task is not None and not self.task.done() and self.task.get_loop() is loop:
            return
        self.last_id = self.sent_id = await database_sync_to_async(settled_id)()
        self.gap_since = None
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
        loop = asyncio.get_running_loop()
        while True:
            try:
                rows = await database_sync_to_async(self._fetch)(self.last_id)
                ready = self._ready(rows, loop.time())
                for event in ready:
                    message = event.as_message()
                    # Set before the send: the in-memory layer picks the group's members when
                    # group_send is called, so a socket that reads this id joined too late for
                    # this event and must replay it, and one that reads less receives it live.
                    self.sent_id = max(self.sent_id, event.id)
                    await layer.group_send(group_name(event.topic), {"type": "event.message", "event": message, "text": json.dumps(message)})
                    self.last_id = event.id
                if ready and len(rows) == BATCH:
                    continue  # a burst: drain it before sleeping
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event relay poll failed; retrying")
            await asyncio.sleep(settings.EVENTS_POLL_SECONDS)

    def _ready(self, rows: list[Event], now: float) -> list[Event]:
        """The leading rows of `rows` (fetched after last_id, in id order) to deliver at `now`.

        Delivery stops at the first gap in the ids. A gap right after last_id holds everything
        until GAP_GRACE_SECONDS after the relay first met it, then it is skipped.
        """
        if not rows:
            return []
        if self.last_id and rows[0].id != self.last_id + 1:  # the next id is still missing
            if self.gap_since is None:
                self.gap_since = now
            if now - self.gap_since < GAP_GRACE_SECONDS:
                return []
            log.warning("event relay: ids %d-%d never appeared; skipping them", self.last_id + 1, rows[0].id - 1)
        ready = [rows[0]]
        for event in rows[1:]:
            if event.id != ready[-1].id + 1:
                self.gap_since = now  # a further gap: its grace starts now
                return ready
            ready.append(event)
        self.gap_since = None
        return ready

    @staticmethod
    def _fetch(after_id: int) -> list[Event]:
        return list(Event.objects.filter(id__gt=after_id).order_by("id")[:BATCH])


def settled_id() -> int:
    """The id before the first gap that may still fill, by the table's timestamps; 0 if empty.

    A gap counts as open while the row after it is younger than GAP_GRACE_SECONDS by its
    created_at: the missing id was taken before that row's, and a running relay met the gap no
    earlier than that row was created. Only the newest BATCH rows are looked at: a gap below
    them is long past its grace, or so deep in a burst that it is not waited for. Timestamps
    come from the writing process's clock, so hosts' clocks must agree to well within the grace.
    """
    rows = list(Event.objects.order_by("-id").values_list("id", "created_at")[:BATCH])
    if not rows:
        return 0
    cutoff = timezone.now() - timedelta(seconds=GAP_GRACE_SECONDS)
    rows.reverse()
    prev = rows[0][0]
    for event_id, created_at in rows[1:]:
        if event_id != prev + 1 and created_at > cutoff:
            return prev
        prev = event_id
    return prev


relay = EventRelay()
