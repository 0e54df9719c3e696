"""Live progress over plain HTTP: an object's events as a Server-Sent Events stream.

`GET /api/v1/trainings/{id}/events` (and /predictions/{id}/events, /datasets/{id}/events)
answers `text/event-stream`: first every stored event after `Last-Event-ID` (or `?after=`),
then `replayed`, then each new event as it happens, the same events the web pages watch over
their WebSocket (flux_studio.consumers), in the same order and each once. One frame per event:

    id: 812
    event: progress
    data: {"id": 812, "kind": "progress", "data": {...}, "ts": "..."}

A training or prediction stream ends after the event that puts the object in a final state
(succeeded, failed, canceled); reconnecting after that answers 204, which tells an EventSource
to stop reconnecting. A dataset stream (auto-captioning) stays open. A comment line is sent
every KEEPALIVE_S so proxies keep an idle stream open and a closed client is noticed.

The view does the authentication and ownership checks synchronously like every API view; the
body is an async generator, so under ASGI (daphne, as the studio runs) a stream holds no thread
while it waits. A WSGI server cannot hold a stream open without a thread each, so there the body
is the stored events and `replayed`, and the stream ends: reconnect with Last-Event-ID to poll.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Iterable, Iterator

from channels.layers import get_channel_layer
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone

from flux_studio.api.problems import field_error
from flux_studio.consumers import replay
from flux_studio.events import events_after, group_name, layer_is_shared
from flux_studio.relay import relay, settled_id

KEEPALIVE_S = 15.0


def after_id(request: HttpRequest) -> int:
    """Where the caller's copy ends: the `Last-Event-ID` header an EventSource sends when it
    reconnects, else `?after=`, else 0 (everything)."""
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise field_error("after", "the id of the last event you have (a whole number)") from None
    if value < 0:
        raise field_error("after", "the id of the last event you have (0 or more)")
    return value


def event_stream(request: HttpRequest, topic: str, *, final_states: Iterable[str] = (),
                 final_now: bool = False) -> HttpResponse:
    """The response for one object's events. `final_states`: the `state` values after which
    the stream ends; `final_now`: the object is in one of them already."""
    after = after_id(request)
    if final_now and not events_after(topic, after):
        return HttpResponse(status=204)  # finished, and the caller has it all: stop reconnecting
    frames = _frames(topic, after, frozenset(final_states)) if isinstance(request, ASGIRequest) else _stored(topic, after)
    response = StreamingHttpResponse(frames, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache, private"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each frame on at once
    return response


def frame(message: dict, text: str | None = None) -> str:
    return f"id: {message['id']}\nevent: {message['kind']}\ndata: {text or json.dumps(message)}\n\n"


def _replayed(last_id: int) -> str:
    # Shaped like an event (as on the WebSocket), without an id: a reconnect resumes after the events.
    return f"event: replayed\ndata: {json.dumps({'kind': 'replayed', 'data': {'last_id': last_id}})}\n\n"


def _stored(topic: str, after: int) -> Iterator[str]:
    """WSGI: the stored events up to the settled point (flux_studio.relay), then the end."""
    upto, last_id = settled_id(), after
    while page := events_after(topic, last_id, upto=upto):
        for event in page:
            last_id = event.id
            yield frame(event.as_message())
    yield _replayed(last_id)


def _ends(message: dict, final_states: frozenset[str]) -> bool | None:
    """True/False when the message says which state the object is in now, else None."""
    if message["kind"] != "state":
        return None
    return (message.get("data") or {}).get("state") in final_states


async def _frames(topic: str, after: int, final_states: frozenset[str]) -> AsyncIterator[str]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = group_name(topic)
    # Join first, then replay, as the WebSocket consumer does: nothing falls between the two.
    await layer.group_add(group, channel)
    joined = timezone.now()
    pending: asyncio.Future | None = None
    try:
        if not layer_is_shared():
            await relay.ensure_running()
        last_id, finished = after, False
        async for message in replay(topic, after, joined):
            last_id = message["id"]
            says = _ends(message, final_states)
            finished = finished if says is None else says
            yield frame(message)
        yield _replayed(last_id)
        if finished:
            return
        while True:
            if pending is None:
                pending = asyncio.ensure_future(layer.receive(channel))
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
            if not done:
                yield ": keepalive\n\n"
                continue
            received, pending = pending.result(), None
            message = received["event"]
            if message["id"] <= last_id:
                continue  # replayed already
            last_id = message["id"]
            yield frame(message, received.get("text"))
            if _ends(message, final_states):
                return
    finally:
        if pending is not None:
            pending.cancel()
        await layer.group_discard(group, channel)
