"""Live progress over the HTTP API: GET /api/v1/trainings/{id}/events as Server-Sent Events.

The streams go through the real ASGI application (as daphne serves it), with a bearer token:
stored events first, then `replayed`, then live ones; the stream ends after the final state; a
reconnect with Last-Event-ID gets only what it missed, and 204 once there is nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import ApplicationCommunicator

from flux_studio import events
from flux_studio.api import streams
from flux_studio.asgi import application
from flux_studio.relay import relay
from trainer import jobs
from trainer.models import JobState, TrainingJob
from tests.api.conftest import body_of
from tests.conftest import LOGIN_ENDINGS, end_login

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]


class Stream:
    """One GET through the ASGI app; `frames()` reads the body as SSE frames as it arrives."""

    def __init__(self, path: str, token: str | None, headers: dict[str, str] | None = None, method: str = "GET") -> None:
        path, _, query = path.partition("?")
        raw_headers = [(b"host", b"testserver")]
        if token:
            raw_headers.append((b"authorization", f"Bearer {token}".encode()))
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.communicator = ApplicationCommunicator(application, {
            "type": "http", "http_version": "1.1", "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": query.encode(), "headers": raw_headers,
            "server": ("testserver", 80), "client": ("127.0.0.1", 50000),
        })
        self.buffer = ""
        self.ended = False
        self.status = 0
        self.headers: dict[str, str] = {}

    async def open(self) -> "Stream":
        await self.communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.communicator.receive_output(timeout=10)
        self.status = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return self

    async def frame(self, timeout: float = 10) -> dict | None:
        """The next frame as {"id", "event", "data", "comment"}, or None once the body ended."""
        while "\n\n" not in self.buffer:
            if self.ended:
                return None
            message = await self.communicator.receive_output(timeout=timeout)
            self.buffer += message.get("body", b"").decode()
            self.ended = not message.get("more_body", False)
        raw, self.buffer = self.buffer.split("\n\n", 1)
        parsed: dict = {"id": None, "event": None, "data": None, "comment": None}
        for line in raw.split("\n"):
            field, _, value = line.partition(": ")
            if field == "":
                parsed["comment"] = value
            elif field == "data":
                parsed["data"] = json.loads(value)
            else:
                parsed[field] = value
        return parsed

    async def until(self, event: str, timeout: float = 10) -> list[dict]:
        seen = []
        while True:
            got = await self.frame(timeout)
            assert got is not None, f"the stream ended before {event!r}; saw {seen}"
            seen.append(got)
            if got["event"] == event:
                return seen

    async def close(self) -> None:
        await self.communicator.send_input({"type": "http.disconnect"})
        await self.communicator.wait(timeout=5)


@pytest.fixture
def queued_job(alice, make_dataset, no_queue) -> TrainingJob:
    return jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")


def _training(job: TrainingJob) -> None:
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.TRAINING)
    job.refresh_from_db()
    jobs.publish_state(job)


def _finish(job: TrainingJob) -> None:
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED, step=job.total_steps)
    job.refresh_from_db()
    jobs.publish_state(job, "Done.")


def test_stored_then_live_then_the_stream_ends_with_the_training(alice_token, queued_job):
    job = queued_job
    stored = events.publish(job.topic, "log", {"line": "stored before the client came"})
    path = f"/api/v1/trainings/{job.pk}/events"

    async def scenario() -> None:
        stream = await Stream(path, alice_token).open()
        assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
        assert "no-cache" in stream.headers["cache-control"]
        replayed = await stream.until("replayed")
        logs = [f for f in replayed if f["event"] == "log"]
        assert logs[-1]["data"]["data"]["line"] == "stored before the client came"
        assert logs[-1]["id"] == str(stored.id)
        assert replayed[-1]["data"] == {"kind": "replayed", "data": {"last_id": replayed[-2]["data"]["id"]}}
        assert replayed[-1]["id"] is None, "no id: a reconnect's Last-Event-ID stays the last event's"

        live = await sync_to_async(events.publish)(job.topic, "progress", {"step": 3, "total": 10, "loss": 0.42})
        got = await stream.frame()
        assert (got["event"], got["id"], got["data"]["data"]["loss"]) == ("progress", str(live.id), 0.42)
        sample_url = f"/api/v1/trainings/{job.pk}/samples/1"
        await sync_to_async(events.publish)(job.topic, "sample", {"step": 3, "url": "/page/x.png", "api_url": sample_url})
        got = await stream.frame()
        assert got["data"]["data"]["api_url"] == "http://testserver" + sample_url, "absolute, as the objects' URLs"
        assert got["data"]["data"]["url"] == "/page/x.png", "the web page's own link is left as it is"
        await sync_to_async(_training)(job)
        got = await stream.frame()
        assert (got["data"]["data"]["state"], got["data"]["data"]["status"]) == ("training", "processing"), \
            "the API's status beside the studio's state"

        await sync_to_async(_finish)(job)
        got = await stream.frame()
        assert got["event"] == "state" and got["data"]["data"]["state"] == "succeeded"
        assert got["data"]["data"]["status"] == "succeeded"
        assert await stream.frame() is None, "the stream ends once the training is finished"
        await relay.stop()

    async_to_sync(scenario)()


def test_reconnect_gets_only_what_it_missed_then_204(alice_token, queued_job):
    job = queued_job
    first = events.publish(job.topic, "log", {"line": "one"})
    second = events.publish(job.topic, "log", {"line": "two"})
    _finish(job)
    last = events.events_after(job.topic, second.id)[-1]
    path = f"/api/v1/trainings/{job.pk}/events"

    async def scenario() -> None:
        stream = await Stream(path, alice_token, {"Last-Event-ID": str(first.id)}).open()
        frames = await stream.until("replayed")
        assert [f["data"]["data"].get("line") for f in frames if f["event"] == "log"] == ["two"]
        assert frames[-2]["event"] == "state" and frames[-2]["data"]["data"]["state"] == "succeeded"
        assert await stream.frame() is None, "a finished training's stream ends after the replay"

        done = await Stream(f"{path}?after={last.id}", alice_token).open()
        assert done.status == 204, "nothing more will come: an EventSource stops reconnecting"
        await relay.stop()

    async_to_sync(scenario)()


def test_idle_stream_sends_keepalives_and_leaves_its_group_when_closed(alice_token, queued_job, monkeypatch):
    monkeypatch.setattr(streams, "KEEPALIVE_S", 0.2)
    job = queued_job

    async def scenario() -> None:
        stream = await Stream(f"/api/v1/trainings/{job.pk}/events", alice_token).open()
        await stream.until("replayed")
        got = await stream.frame()
        assert got["comment"] == "keepalive" and got["event"] is None
        layer = streams.get_channel_layer()
        group = events.group_name(job.topic)
        assert layer.groups.get(group), "the open stream is in its topic's group"
        await stream.close()
        assert not layer.groups.get(group), "a closed stream stops receiving"
        await relay.stop()

    if events.layer_is_shared():
        pytest.skip("reads the in-memory layer's groups")
    async_to_sync(scenario)()


def test_an_open_stream_ends_once_its_token_is_revoked_however_busy(alice, alice_token, queued_job, monkeypatch):
    """A revoke stops a leaked token's open stream too, within a keepalive period, even while
    events keep coming (the check does not wait for a quiet moment)."""
    from flux_studio.api.models import ApiToken
    from flux_studio.api.tokens import token_revoke

    monkeypatch.setattr(streams, "KEEPALIVE_S", 0.3)
    job = queued_job

    async def scenario() -> None:
        stream = await Stream(f"/api/v1/trainings/{job.pk}/events", alice_token).open()
        await stream.until("replayed")
        token = await sync_to_async(ApiToken.objects.get)(owner=alice)
        await sync_to_async(token_revoke)(token=token)

        async def busy() -> None:  # an event every 0.1 s for 5 s: never a quiet keepalive period
            for n in range(50):
                await sync_to_async(events.publish)(job.topic, "log", {"line": f"private {n}"})
                await asyncio.sleep(0.1)

        publisher = asyncio.ensure_future(busy())
        started = asyncio.get_running_loop().time()
        while await stream.frame(timeout=10) is not None:
            assert asyncio.get_running_loop().time() - started < 8, "the revoked token's stream is still open"
        assert not publisher.done(), "the stream ran on while events came, until they stopped"
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        await relay.stop()

    async_to_sync(scenario)()


@pytest.mark.parametrize("ends_it", LOGIN_ENDINGS)
def test_a_session_stream_stays_open_while_logged_in_and_ends_once_the_login_no_longer_holds(alice, queued_job,
                                                                                           monkeypatch, ends_it):
    from django.conf import settings as django_settings
    from django.test import Client

    monkeypatch.setattr(streams, "KEEPALIVE_S", 0.3)
    browser = Client()
    browser.force_login(alice)
    cookie = f"{django_settings.SESSION_COOKIE_NAME}={browser.cookies[django_settings.SESSION_COOKIE_NAME].value}"

    async def scenario() -> None:
        stream = await Stream(f"/api/v1/trainings/{queued_job.pk}/events", None, {"Cookie": cookie}).open()
        assert stream.status == 200
        await stream.until("replayed")
        for _ in range(3):  # checked each period, and still this person's session
            assert (await stream.frame())["comment"] == "keepalive"
        # Elsewhere, the password changes, the session logs out, or the account is deactivated:
        # this session is no longer good (as for any request)
        await sync_to_async(end_login)(ends_it, alice, browser)
        started = asyncio.get_running_loop().time()
        while await stream.frame(timeout=10) is not None:
            assert asyncio.get_running_loop().time() - started < 5, "the stale session's stream is still open"
        await relay.stop()

    async_to_sync(scenario)()


def test_a_token_stream_ends_once_its_owner_is_deactivated(alice, alice_token, queued_job, monkeypatch):
    monkeypatch.setattr(streams, "KEEPALIVE_S", 0.3)

    async def scenario() -> None:
        stream = await Stream(f"/api/v1/trainings/{queued_job.pk}/events", alice_token).open()
        await stream.until("replayed")
        assert (await stream.frame())["comment"] == "keepalive", "checked, and still good"
        await sync_to_async(lambda: type(alice).objects.filter(pk=alice.pk).update(is_active=False))()
        started = asyncio.get_running_loop().time()
        while await stream.frame(timeout=10) is not None:
            assert asyncio.get_running_loop().time() - started < 5, "a deactivated owner's token still reads"
        await relay.stop()

    async_to_sync(scenario)()


def test_only_the_owner_with_a_token_or_session_may_watch(alice, alice_api, bob_api, queued_job, client):
    path = f"/api/v1/trainings/{queued_job.pk}/events"
    assert bob_api.get(path).status_code == 404
    anonymous = client.get(path)
    assert anonymous.status_code == 401 and "Bearer" in anonymous.json()["detail"]
    bad = alice_api.get(path + "?after=yesterday")
    assert bad.status_code == 422 and "after" in json.dumps(bad.json())


def test_prediction_and_dataset_streams(alice_token, alice, make_dataset, queued_job):
    from gallery.models import Generation, GenerationState

    from gallery.services import publish_state

    generation = Generation.objects.create(owner=alice, prompt="a photo", base_model="tiny", seed=1, steps=3, guidance=1.0,
                                           width=64, height=64, num_images=1, state=GenerationState.FAILED)
    running = Generation.objects.create(owner=alice, prompt="a photo", base_model="tiny", seed=1, steps=3, guidance=1.0,
                                        width=64, height=64, num_images=1, state=GenerationState.RUNNING)
    publish_state(running)
    dataset = queued_job.dataset

    async def scenario() -> None:
        gone = await Stream(f"/api/v1/predictions/{generation.pk}/events?after=0", alice_token).open()
        assert gone.status == 204, "a finished prediction with no events: nothing to stream"
        watched = await Stream(f"/api/v1/predictions/{running.pk}/events", alice_token).open()
        state = (await watched.until("state"))[-1]["data"]["data"]
        assert (state["state"], state["status"]) == ("running", "processing"), "named as the prediction's status"
        await watched.close()
        stream = await Stream(f"/api/v1/datasets/{dataset.pk}/events", alice_token).open()
        assert stream.status == 200
        await stream.until("replayed")
        await sync_to_async(events.publish)(dataset.topic, "captioning", {"state": "started", "message": "Captioning 1 photo."})
        got = await stream.frame()
        assert got["event"] == "captioning" and got["data"]["data"]["state"] == "started"
        await stream.close()
        await relay.stop()

    async_to_sync(scenario)()


@pytest.mark.slow
def test_a_script_watches_a_real_worker_train(start_worker, alice, alice_api, alice_token, make_dataset):
    worker = start_worker("gpu")
    dataset = make_dataset(alice, n=3)
    created = alice_api.post("/api/v1/trainings", {"input": {
        "dataset": dataset.pk, "base_model": "tiny", "preset": "fast", "steps": 8, "sample_every": 4,
        "sample_prompts": ["a photo of zxq"]}})
    assert created.status_code == 201, created.json()
    training_id = created.json()["id"]

    async def scenario() -> list[dict]:
        stream = await Stream(f"/api/v1/trainings/{training_id}/events", alice_token).open()
        frames = []
        while (got := await stream.frame(timeout=240)) is not None:
            frames.append(got)
        await relay.stop()
        return frames

    frames = async_to_sync(scenario)()
    job = TrainingJob.objects.get(pk=training_id)
    assert job.state == JobState.SUCCEEDED, (job.error, worker.output()[-3000:])
    states = [f["data"]["data"]["state"] for f in frames if f["event"] == "state"]
    assert "training" in states and states[-1] == "succeeded"
    progress = [f["data"]["data"] for f in frames if f["event"] == "progress"]
    assert progress[-1]["step"] == 8
    samples = [f["data"]["data"] for f in frames if f["event"] == "sample"]
    assert samples[0]["api_url"].startswith("http://testserver/api/v1/")
    assert body_of(alice_api.get(samples[0]["api_url"]))[:4] == b"\x89PNG", "fetched with the token"
    ids = [int(f["id"]) for f in frames if f["id"]]
    assert ids == sorted(set(ids)), "each event once, in order"


def test_under_wsgi_the_stream_is_the_stored_events_then_it_ends(alice_api, queued_job):
    """A WSGI server cannot hold a stream open cheaply: a client there polls with Last-Event-ID."""
    job = queued_job
    first = events.publish(job.topic, "log", {"line": "one"})
    events.publish(job.topic, "log", {"line": "two"})
    response = alice_api.get(f"/api/v1/trainings/{job.pk}/events", headers={"Last-Event-ID": str(first.id)})
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    assert '"line": "two"' in body and '"line": "one"' not in body
    assert body.rstrip().split("\n\n")[-1].startswith("event: replayed")


def _canceled(job: TrainingJob) -> int:
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.CANCELED)
    job.refresh_from_db()
    jobs.publish_state(job, "Canceled.")
    return events.events_after(job.topic, 0)[-1].id


def test_a_final_state_that_arrives_after_a_later_event_still_ends_the_stream(alice_token, queued_job):
    """With Redis, events go out in commit order: a queue update committed just after the cancel
    can arrive first. The stream must still pass the final state on and end."""
    job = queued_job

    async def scenario() -> None:
        stream = await Stream(f"/api/v1/trainings/{job.pk}/events", alice_token).open()
        frames = await stream.until("replayed")
        top = frames[-1]["data"]["data"]["last_id"]
        layer, group = streams.get_channel_layer(), events.group_name(job.topic)
        ts = "2026-11-26T00:00:00+00:00"
        await layer.group_send(group, {"type": "event.message", "event": {
            "id": top + 2, "kind": "queue", "data": {"position": None}, "ts": ts}})
        await layer.group_send(group, {"type": "event.message", "event": {
            "id": top + 1, "kind": "state", "data": {"state": "canceled"}, "ts": ts}})
        assert (await stream.frame())["event"] == "queue"
        last = await stream.frame()
        assert last["event"] == "state" and last["data"]["data"]["state"] == "canceled"
        resume_at = await stream.frame()
        assert resume_at["id"] == str(top + 2) and resume_at["data"] is None, "a reconnect does not get 'queue' again"
        assert await stream.frame() is None
        await relay.stop()

    async_to_sync(scenario)()


def test_a_finished_training_with_events_after_its_end_still_ends(alice_token, queued_job):
    job = queued_job
    canceled_id = _canceled(job)
    events.publish(job.topic, "queue", {"position": None})  # published by a queue update racing the cancel

    async def scenario() -> None:
        stream = await Stream(f"/api/v1/trainings/{job.pk}/events", alice_token, {"Last-Event-ID": str(canceled_id)}).open()
        assert stream.status == 200
        frames = await stream.until("replayed")
        assert [f["event"] for f in frames] == ["queue", "replayed"]
        assert await stream.frame(timeout=5) is None, "finished: the stream ends instead of waiting forever"
        await relay.stop()

    async_to_sync(scenario)()


def test_a_resumed_training_streams_on_after_its_old_failure(alice_token, queued_job):
    job = queued_job
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.FAILED)
    job.refresh_from_db()
    jobs.publish_state(job, "Out of memory.")
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.QUEUED)
    job.refresh_from_db()
    jobs.publish_state(job, "Resumed.")

    async def scenario() -> None:
        stream = await Stream(f"/api/v1/trainings/{job.pk}/events", alice_token).open()
        await stream.until("replayed")
        live = await sync_to_async(events.publish)(job.topic, "log", {"line": "training again"})
        got = await stream.frame()
        assert got["id"] == str(live.id), "a failure followed by a resume is not the end"
        await stream.close()
        await relay.stop()

    async_to_sync(scenario)()


@pytest.mark.parametrize("header, query, field", [
    ({"Last-Event-ID": "99999999999999"}, "", "Last-Event-ID"),
    ({}, "?after=99999999999999", "after"),
    ({}, "?after=1_0", "after"),
    ({"Last-Event-ID": "\u0663"}, "", "Last-Event-ID"),
    ({}, "?after=-1", "after"),
])
def test_an_id_no_event_has_is_refused_naming_what_was_sent(alice_api, queued_job, header, query, field):
    events.publish(queued_job.topic, "log", {"line": "one"})
    response = alice_api.get(f"/api/v1/trainings/{queued_job.pk}/events{query}", headers=header)
    assert response.status_code == 422
    assert field in response.json()["errors"], response.json()


def test_every_stream_ends_after_its_longest_life(alice_token, queued_job, monkeypatch):
    """A client then reconnects with Last-Event-ID, and its token and the object are checked again."""
    monkeypatch.setattr(streams, "MAX_STREAM_S", 0.5)
    monkeypatch.setattr(streams, "KEEPALIVE_S", 0.2)
    dataset = queued_job.dataset

    async def scenario() -> None:
        stream = await Stream(f"/api/v1/datasets/{dataset.pk}/events", alice_token).open()
        await stream.until("replayed")
        seen = []
        while (got := await stream.frame(timeout=5)) is not None:
            seen.append(got["comment"])
        assert seen and set(seen) == {"keepalive"}
        await relay.stop()

    async_to_sync(scenario)()


def test_a_person_may_hold_only_so_many_streams_at_once(alice_token, bob_token, bob, make_dataset, queued_job, settings):
    settings.API_MAX_STREAMS_PER_USER = 2
    path = f"/api/v1/trainings/{queued_job.pk}/events"
    bobs = jobs.job_create(owner=bob, dataset=make_dataset(bob, n=1), base_model="tiny")

    async def scenario() -> None:
        first, second = [await Stream(path, alice_token).open() for _ in range(2)]
        for stream in (first, second):
            await stream.until("replayed")
        refused = await Stream(path, alice_token).open()
        assert refused.status == 429 and refused.headers["retry-after"] == "10"
        assert refused.headers["content-type"] == "application/problem+json"
        others = await Stream(f"/api/v1/trainings/{bobs.pk}/events", bob_token).open()
        assert others.status == 200, "another person's streams are counted apart"
        await first.close()  # gives its place back
        again = await Stream(path, alice_token).open()
        assert again.status == 200
        await again.until("replayed")
        for stream in (second, again, others):
            await stream.close()
        assert streams.open_streams(queued_job.owner_id) == 0
        await relay.stop()

    async_to_sync(scenario)()


def test_head_answers_the_headers_without_holding_a_stream(alice_token, queued_job):
    async def scenario() -> None:
        stream = await Stream(f"/api/v1/trainings/{queued_job.pk}/events", alice_token, method="HEAD").open()
        assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
        assert await stream.frame(timeout=5) is None

    async_to_sync(scenario)()


def test_open_streams_hold_no_database_connection(alice_token, queued_job):
    """Each stream runs in a request thread of its own; after the replay it gives its connection
    back, or a hundred watching scripts would use up PostgreSQL's connections."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("counts PostgreSQL backends")

    def backends() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'")
            return cursor.fetchone()[0]

    async def scenario() -> None:
        before = await sync_to_async(backends)()
        opened = []
        for _ in range(3):
            stream = await Stream(f"/api/v1/trainings/{queued_job.pk}/events", alice_token).open()
            await stream.until("replayed")
            opened.append(stream)
        await asyncio.sleep(0.5)
        assert await sync_to_async(backends)() <= before
        for stream in opened:
            await stream.close()

    async_to_sync(scenario)()
