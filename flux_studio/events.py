"""Publish events that pages watch live, and read them back for replay.

`publish` writes the event to the database first (so it can be replayed), then hands it to the
channel layer once that row is committed: an event written inside a transaction goes live when
the transaction commits, and never if it rolls back (outside one, at once). With Redis the
channel layer reaches every ASGI process directly. In the embedded
shape the layer is in-process, so the worker cannot reach it: the ASGI process's relay
(`flux_studio.relay`) picks new rows out of the table instead.

`events_after` reads the log back; how far a replay may read while a lower id is still
uncommitted is decided in `flux_studio.consumers`. With Redis, live events go out in the order
their publishers commit: two processes publishing to one topic at the same moment can still
reach a page out of id order, and the page keeps only the first (not handled here).
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

from flux_studio.models import Event

log = logging.getLogger(__name__)

_TOPIC_RE = re.compile(r"^[a-z][a-z0-9_-]{0,60}-\d+$")
REPLAY_PAGE = 2000  # rows per replay query; a replay reads pages until the log is exhausted


def group_name(topic: str) -> str:
    return f"events.{topic}"


def check_topic(topic: str) -> str:
    if not _TOPIC_RE.match(topic):
        raise ValueError(f"bad event topic {topic!r}: expected e.g. 'training-12'")
    return topic


def layer_is_shared() -> bool:
    """True when the channel layer itself crosses processes (Redis)."""
    layer = get_channel_layer()
    return layer is not None and not isinstance(layer, InMemoryChannelLayer)


def publish(topic: str, kind: str, data: dict[str, Any] | None = None) -> Event:
    event = Event.objects.create(topic=check_topic(topic), kind=kind, data=data or {})
    if layer_is_shared():
        transaction.on_commit(lambda: _send_live(event))
    return event


def _send_live(event: Event) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(
            group_name(event.topic), {"type": "event.message", "event": event.as_message()}
        )
    except Exception:  # the row is written; a page will replay it on reconnect
        log.warning("live delivery of %s failed; it stays in the replay log", event, exc_info=True)


def events_after(topic: str, after_id: int = 0, *, kinds: list[str] | None = None,
                 upto: int | None = None) -> list[Event]:
    qs = Event.objects.filter(topic=topic, id__gt=after_id)
    if upto is not None:
        qs = qs.filter(id__lte=upto)
    if kinds:
        qs = qs.filter(kind__in=kinds)
    return list(qs.order_by("id")[:REPLAY_PAGE])


def written_before(topic: str, after_id: int, moment: datetime) -> bool:
    """Whether the topic has a row after `after_id` created at or before `moment`."""
    return Event.objects.filter(topic=topic, id__gt=after_id, created_at__lte=moment).exists()
