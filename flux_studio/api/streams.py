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
every KEEPALIVE_S so proxies keep an idle stream open and a closed client is noticed, and any
stream ends after MAX_STREAM_S: the client reconnects with Last-Event-ID (an EventSource does
it by itself), which checks its token and the object again. A person may hold at most
API_MAX_STREAMS_PER_USER live streams on one server process; one more is a 429.

The view does the authentication and ownership checks synchronously like every API view; the
body is an async generator. Under ASGI (daphne, as the studio runs) Django keeps the request's
thread for the life of the response, idle while the stream waits, and the stream gives its
database connection back once the replay is done: an open stream holds no connection. A WSGI
server would hold a worker per stream, so there the body is the stored events and `replayed`,
and the stream ends: reconnect with Last-Event-ID to poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import threading
from collections import Counter
from typing import AsyncIterator, Callable, Iterable, Iterator, Mapping

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils import timezone

from flux_studio.api.common import Urls
from flux_studio.api.problems import ApiError, field_error
from flux_studio.consumers import replay
from flux_studio.events import events_after, group_name, layer_is_shared
from flux_studio.models import Event
from flux_studio.relay import relay, settled_id

KEEPALIVE_S = 15.0
MAX_STREAM_S = 30 * 60

# Live streams open in this process, per user id. Counted by the stream body itself (from its
# first frame to its end, however it ends), so a request that never started streaming holds no
# place; the view's check before that is therefore soft by the few that start at the same moment.
_open_streams: Counter[int] = Counter()
_open_lock = threading.Lock()


def open_streams(user_id: int) -> int:
    with _open_lock:
        return _open_streams[user_id]


async def _counted(user_id: int, frames: AsyncIterator[str]) -> AsyncIterator[str]:
    with _open_lock:
        _open_streams[user_id] += 1
    try:
        async with contextlib.aclosing(frames):  # closed with this one, not whenever it is collected
            async for chunk in frames:
                yield chunk
    finally:
        with _open_lock:
            _open_streams[user_id] -= 1
            if not _open_streams[user_id]:
                del _open_streams[user_id]


def after_id(request: HttpRequest) -> int:
    """Where the caller's copy ends: the `Last-Event-ID` header an EventSource sends when it
    reconnects, else `?after=`, else 0 (everything). An id above any event so far is refused:
    every later event would have a lower id and be taken for one already seen."""
    if request.headers.get("Last-Event-ID"):
        field, raw = "Last-Event-ID", request.headers["Last-Event-ID"].strip()
    else:
        field, raw = "after", request.GET.get("after", "0").strip()
    if not (raw.isascii() and raw.isdigit()):
        raise field_error(field, "the id of the last event you have: a whole number, 0 or more")
    value = int(raw)
    if value and value > (Event.objects.aggregate(top=Max("id"))["top"] or 0):
        raise field_error(field, f"no event has id {value} yet; send the id of the last event you received")
    return value


def event_stream(request: HttpRequest, topic: str, *, final_states: Iterable[str] = (),
                 final_now: bool = False, statuses: Mapping[str, str] | None = None) -> HttpResponseBase:
    """The response for one object's events. `final_states`: the `state` values after which
    the stream ends; `final_now`: the object is in one of them already; `statuses`: the API's
    `status` for each state, added to state events beside the studio's own `state`."""
    render = functools.partial(frame, statuses=statuses, base=Urls(request).base)
    after = after_id(request)
    if final_now and not events_after(topic, after):
        return HttpResponse(status=204)  # finished, and the caller has it all: stop reconnecting
    content_type = "text/event-stream; charset=utf-8"
    if request.method == "HEAD":  # the headers a GET would answer with, and no stream to hold
        response: HttpResponseBase = HttpResponse(content_type=content_type)
    elif isinstance(request, ASGIRequest):
        limit = settings.API_MAX_STREAMS_PER_USER
        if open_streams(request.user.pk) >= limit:
            raise ApiError(429, f"you have {limit} event streams open already (API_MAX_STREAMS_PER_USER); close one, "
                                "or poll the object's urls.get", headers={"Retry-After": "10"})
        frames = _frames(topic, after, frozenset(final_states), finished=final_now, render=render,
                         allowed=credentials_check(request))
        response = StreamingHttpResponse(_counted(request.user.pk, frames), content_type=content_type)
    else:
        response = StreamingHttpResponse(_stored(topic, after, render), content_type=content_type)
    response["Cache-Control"] = "no-cache, private"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each frame on at once
    return response


def frame(message: dict, text: str | None = None, *, statuses: Mapping[str, str] | None = None,
          base: str = "") -> str:
    """One SSE frame; `text`: the message already as JSON. A state event gains the object's
    `status` as the API's objects name it (a training's "training" state is "processing"), and
    a sample's or image's `api_url` starts with `base` (this request's scheme and host), as the
    URLs in the API's objects do."""
    data = message.get("data")
    if isinstance(data, dict):
        if statuses and message["kind"] == "state":
            data = {**data, "status": statuses.get(data.get("state"), data.get("state"))}
        if base and isinstance(data.get("api_url"), str) and data["api_url"].startswith("/"):
            data = {**data, "api_url": base + data["api_url"]}
        if data is not message["data"]:
            message, text = {**message, "data": data}, None
    return f"id: {message['id']}\nevent: {message['kind']}\ndata: {text or json.dumps(message)}\n\n"


def _replayed(last_id: int) -> str:
    # Shaped like an event (as on the WebSocket), without an id: a reconnect resumes after the events.
    return f"event: replayed\ndata: {json.dumps({'kind': 'replayed', 'data': {'last_id': last_id}})}\n\n"


def _stored(topic: str, after: int, render: Callable[..., str] = frame) -> Iterator[str]:
    """WSGI: the stored events up to the settled point (flux_studio.relay), then the end."""
    upto, last_id = settled_id(), after
    while page := events_after(topic, last_id, upto=upto):
        for event in page:
            last_id = event.id
            yield render(event.as_message())
    yield _replayed(last_id)


def _ends(message: dict, final_states: frozenset[str]) -> bool | None:
    """True/False when the message says which state the object is in now, else None."""
    if message["kind"] != "state":
        return None
    return (message.get("data") or {}).get("state") in final_states


def _release_connections() -> None:
    for connection in connections.all(initialized_only=True):
        connection.close()


def credentials_check(request: HttpRequest) -> Callable[[], bool]:
    """Whether what let the request in still holds: its token not revoked (nor one above it, as a
    revoke cascades) and its owner active; or its session still that user's (not logged out).
    An open stream asks at each keepalive, so a revoked token stops reading within KEEPALIVE_S."""
    from django.contrib.sessions.backends.base import SessionBase

    from flux_studio.auth_checks import session_holds

    token = getattr(request, "api_token", None)
    user_id = request.user.pk
    if token is not None:
        from flux_studio.api.models import ApiToken

        return lambda: ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True, owner__is_active=True).exists()
    session: SessionBase | None = getattr(request, "session", None)
    key = session.session_key if session is not None else None
    if session is None or key is None:
        return lambda: True
    return functools.partial(session_holds, type(session), key, user_id)


def _checked(allowed: Callable[[], bool]) -> bool:
    try:
        return allowed()
    finally:
        _release_connections()


async def _frames(topic: str, after: int, final_states: frozenset[str], *, finished: bool,
                  render: Callable[..., str] = frame, allowed: Callable[[], bool] = lambda: True) -> AsyncIterator[str]:
    """`finished`: the object was in a final state when the request came; a replayed state event
    says otherwise (a failed training resumed since the caller's last event). `allowed()`: asked
    at each keepalive; when the caller's credentials no longer hold, the stream ends."""
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
        last_id = after
        async for message in replay(topic, after, joined):
            last_id = message["id"]
            says = _ends(message, final_states)
            finished = finished if says is None else says
            yield render(message)
        yield _replayed(last_id)
        # From here on only the channel layer is read: the connection goes back (this runs in the
        # request's thread, where the view and the replay opened it).
        await sync_to_async(_release_connections)()
        if finished:
            return
        replayed_id = last_id
        clock = asyncio.get_running_loop().time
        deadline, next_check = clock() + MAX_STREAM_S, clock() + KEEPALIVE_S
        while (left := deadline - clock()) > 0:
            if clock() >= next_check:  # however busy the stream: a revoke or logout ends it
                if not await sync_to_async(_checked)(allowed):
                    return
                next_check = clock() + KEEPALIVE_S
            if pending is None:
                pending = asyncio.ensure_future(layer.receive(channel))
            done, _ = await asyncio.wait({pending}, timeout=min(KEEPALIVE_S, left, max(0.0, next_check - clock())))
            if not done:
                if clock() < next_check:
                    continue  # woken for the check, which the loop's top makes
                yield ": keepalive\n\n"
                continue
            received, pending = pending.result(), None
            message = received["event"]
            ends = _ends(message, final_states)
            if message["id"] <= last_id:
                # Seen already, unless it is a final state that arrived after a later event (with
                # Redis, events go out in commit order): dropping that would leave the caller
                # waiting for an end that never comes.
                if ends and message["id"] > replayed_id:
                    yield render(message, received.get("text"))
                    yield f"id: {last_id}\n\n"  # the caller's Last-Event-ID goes back to the newest it has
                    return
                continue
            last_id = message["id"]
            yield render(message, received.get("text"))
            if ends:
                return
    finally:
        if pending is not None:
            pending.cancel()
        await layer.group_discard(group, channel)
