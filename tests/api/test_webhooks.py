"""Webhooks: events become signed messages; delivery to a local receiver, with a retry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Iterator

import pytest
from django.utils import timezone

from flux_studio import events
from flux_studio.api import delivery, tasks, webhooks
from flux_studio.api.models import Webhook, WebhookAttempt, WebhookMessage
from trainer.models import JobState, TrainingJob

pytestmark = pytest.mark.django_db


class Receiver:
    """A tiny webhook receiver on 127.0.0.1 (or `host`) that fails the first `fail_first` requests."""

    def __init__(self, fail_first: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.requests: list[dict] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                self.send_response(500 if len(receiver.requests) <= receiver.fail_first else 204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=1)
    yield r
    r.server.shutdown()


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """What a receiver does (Standard Webhooks), written independently of the sender's code."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split())


@pytest.fixture
def enqueued(monkeypatch) -> list[str]:
    sent: list[str] = []
    monkeypatch.setattr(webhooks, "_enqueue", lambda message_id: sent.append(str(message_id)))
    return sent


def launch(api, dataset, url: str, events_filter=None) -> int:
    body = {"input": {"dataset": dataset.pk}, "webhook": url}
    if events_filter:
        body["webhook_events_filter"] = events_filter
    response = api.post("/api/v1/trainings", body)
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_events_become_messages_once_and_logs_are_throttled(alice_api, alice, make_dataset, no_queue, enqueued,
                                                          django_capture_on_commit_callbacks):
    job_id = launch(alice_api, make_dataset(alice, n=1), "http://127.0.0.1:9/hook")
    topic = f"training-{job_id}"
    with django_capture_on_commit_callbacks(execute=True):
        events.publish(topic, "state", {"state": "starting", "message": "Preparing."})
        events.publish(topic, "state", {"state": "training"})
        for n in range(5):
            events.publish(topic, "log", {"line": f"step {n}"})
        events.publish(topic, "progress", {"step": 1})
        events.publish(topic, "sample", {"step": 2})
        TrainingJob.objects.filter(pk=job_id).update(state=JobState.SUCCEEDED, finished_at=timezone.now())
        events.publish(topic, "state", {"state": "succeeded", "message": "Training finished."})
        events.publish(topic, "state", {"state": "succeeded"})
    names = [m.event for m in WebhookMessage.objects.order_by("created_at")]
    assert names == ["start", "logs", "output", "completed"]
    assert len(enqueued) == 4
    completed = json.loads(WebhookMessage.objects.get(event="completed").body)
    assert completed["id"] == job_id and completed["status"] == "succeeded" and "Training finished." in completed["logs"]
    assert completed == {**alice_api.get(f"/api/v1/trainings/{job_id}").json(), "urls": completed["urls"]}


def test_events_filter_and_other_objects(alice_api, alice, make_dataset, no_queue, enqueued,
                                         django_capture_on_commit_callbacks):
    job_id = launch(alice_api, make_dataset(alice, n=1), "http://127.0.0.1:9/hook", ["completed"])
    with django_capture_on_commit_callbacks(execute=True):
        events.publish(f"training-{job_id}", "state", {"state": "training"})
        events.publish(f"training-{job_id}", "log", {"line": "x"})
        events.publish(f"training-{job_id + 1}", "state", {"state": "failed"})
        events.publish(f"dataset-{job_id}", "state", {"state": "failed"})
        events.publish(f"training-{job_id}", "state", {"state": "canceled"})
    assert list(WebhookMessage.objects.values_list("event", flat=True)) == ["completed"]


def test_delivery_is_signed_and_retried_after_a_failure(alice_api, alice, make_dataset, no_queue, enqueued, receiver,
                                                      django_capture_on_commit_callbacks, monkeypatch):
    job_id = launch(alice_api, make_dataset(alice, n=1), receiver.url, ["completed"])
    with django_capture_on_commit_callbacks(execute=True):
        events.publish(f"training-{job_id}", "state", {"state": "failed"})
    message_id = enqueued[0]
    scheduled: list[tuple] = []
    monkeypatch.setattr(tasks.deliver_webhook_task, "schedule", lambda args, delay: scheduled.append((args, delay)))
    tasks.deliver_webhook_task.call_local(message_id, 1)
    assert scheduled == [((message_id, 2), delivery.backoff_seconds(1))]
    assert delivery.backoff_seconds(3) == 4 * delivery.backoff_seconds(1), "exponential"
    tasks.deliver_webhook_task.call_local(message_id, 2)
    assert len(scheduled) == 1, "no retry after success"
    first, second = receiver.requests
    assert first["body"] == second["body"] and first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    secret = alice_api.get("/api/v1/webhooks/default/secret").json()["key"]
    assert verify(secret, second["headers"], second["body"])
    assert not verify(secret, second["headers"], second["body"] + b" ")
    assert json.loads(second["body"])["id"] == job_id
    attempts = list(WebhookAttempt.objects.order_by("number"))
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 204)]
    assert WebhookMessage.objects.get().delivered_at is not None
    log = alice_api.get("/api/v1/webhooks/deliveries").json()["results"]
    assert [(row["attempt"], row["status_code"], row["event"]) for row in log] == [(2, 204, "completed"), (1, 500, "completed")]


def test_a_failing_webhook_is_tried_8_times_5_s_apart_doubling(alice):
    """What the README promises with the default settings: 8 tries, the first retry 5 s after the
    first failure, each delay twice the one before; then the message is marked failed."""
    if "API_WEBHOOK_RETRY_BASE_S" in os.environ:
        pytest.skip("API_WEBHOOK_RETRY_BASE_S is set in this environment: the defaults are not in force")
    hook = Webhook.objects.create(owner=alice, kind="training", object_id=1, url="http://127.0.0.1:9/none", events=["completed"])
    message = WebhookMessage.objects.create(webhook=hook, event="completed", body="{}")
    assert delivery.backoff_seconds(1) == 5
    delays = []
    for attempt in range(1, 20):
        delay = delivery.deliver(str(message.pk), attempt)
        if delay is None:
            break
        delays.append(delay)
    assert delays == [5, 10, 20, 40, 80, 160, 320]  # then the 8th try fails and is the last
    message.refresh_from_db()
    assert message.failed_at and message.delivered_at is None
    assert list(WebhookAttempt.objects.filter(message=message).order_by("number").values_list("number", flat=True)) == \
        [1, 2, 3, 4, 5, 6, 7, 8]
    assert all("ConnectionError" in error for error in WebhookAttempt.objects.values_list("error", flat=True))


def test_bob_does_not_see_alices_deliveries(alice, bob_api):
    hook = Webhook.objects.create(owner=alice, kind="training", object_id=1, url="http://x.test/", events=["completed"])
    WebhookAttempt.objects.create(message=WebhookMessage.objects.create(webhook=hook, event="completed", body="{}"),
                                  number=1, status_code=200)
    assert bob_api.get("/api/v1/webhooks/deliveries").json()["results"] == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]/hook", "http://localhost:8000/admin/",
                                 # IPv6 forms that carry a private IPv4 address: compatible, NAT64, 6to4
                                 "http://[::127.0.0.1]:9/hook", "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
                                 "http://[2002:a01:203::]/hook", "http://[64:ff9b:1::a00:1]/hook",
                                 "http://[::ffff:0:7f00:1]:9/hook"])
def test_internal_addresses_are_refused_without_a_request(alice, settings, url, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    hook = Webhook.objects.create(owner=alice, kind="training", object_id=1, url=url, events=["completed"])
    message = WebhookMessage.objects.create(webhook=hook, event="completed", body="{}")
    assert delivery.deliver(str(message.pk), 1) is None  # no retries for a refused destination
    message.refresh_from_db()
    attempt = WebhookAttempt.objects.get(message=message)
    assert message.failed_at and "non-public address" in attempt.error and attempt.status_code is None
    assert receiver.requests == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]/hook",
                                 "http://192.168.1.10/hook", "http://localhost:8000/admin/"])
def test_a_webhook_naming_an_internal_address_is_refused_when_created(alice_api, settings, no_queue, url):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    created = alice_api.post("/api/v1/predictions", {"input": {"prompt": "a photo"}, "webhook": url})
    assert created.status_code == 422 and "not a public address" in " ".join(created.json()["errors"]["webhook"])
    assert Webhook.objects.count() == 0
    public = alice_api.post("/api/v1/predictions", {"input": {"prompt": "a photo"}, "webhook": "https://hooks.example.com/x"})
    assert public.status_code == 201, public.content


def test_public_ipv6_forms_of_public_ipv4_addresses_are_allowed():
    from flux_studio.api.webhooks import non_public_address

    assert not any(non_public_address(a) for a in ("8.8.8.8", "2001:4860:4860::8888", "64:ff9b::808:808", "2002:808:808::"))


def test_a_name_that_rebinds_to_an_internal_address_after_the_check_is_not_reached(alice, settings, receiver, monkeypatch):
    """DNS rebinding: the name resolves to a public address for the check and to 127.0.0.1 a moment
    later. The request goes to the address the check saw, so the internal receiver gets nothing."""
    import socket

    settings.WEBHOOK_ALLOW_PRIVATE = False
    monkeypatch.setattr(delivery, "TIMEOUT_S", 1)
    real, asked = socket.getaddrinfo, []

    def rebinding(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        asked.append(host)
        address = "1.1.1.1" if len(asked) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    port = receiver.server.server_port
    hook = Webhook.objects.create(owner=alice, kind="training", object_id=1, url=f"http://rebind.test:{port}/hook",
                                  events=["completed"])
    message = WebhookMessage.objects.create(webhook=hook, event="completed", body="{}")
    delivery.deliver(str(message.pk), 1)
    assert receiver.requests == [], "the rebound internal address was called"
    assert WebhookAttempt.objects.get(message=message).status_code is None  # 1.1.1.1 is out of reach here


def test_a_pinned_request_keeps_the_urls_host_for_the_server():
    """What the pinning sends: the socket to the checked address, the Host header as the URL says."""
    r = Receiver()
    try:
        with delivery._pinned_session(["127.0.0.1"]) as session:
            answer = session.post(f"http://hooks.example.test:{r.server.server_port}/hook", data=b"{}", timeout=5)
        assert answer.status_code == 204
        assert r.requests[0]["headers"]["Host"] == f"hooks.example.test:{r.server.server_port}"
    finally:
        r.server.shutdown()


def test_a_pinned_https_request_checks_the_certificate_of_the_urls_host(tmp_path):
    """Over TLS the pinned socket still says the URL's host (SNI) and checks its certificate."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=hooks.example.test", "-addext", "subjectAltName=DNS:hooks.example.test"],
                   check=True, capture_output=True)
    r, names = Receiver(), []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    r.server.socket = context.wrap_socket(r.server.socket, server_side=True)
    try:
        with delivery._pinned_session(["127.0.0.1"]) as session:
            url = f"https://hooks.example.test:{r.server.server_port}/hook"
            assert session.post(url, data=b"{}", timeout=5, verify=str(cert)).status_code == 204
        assert names == ["hooks.example.test"]
    finally:
        r.server.shutdown()


def test_a_pinned_request_falls_back_to_the_next_checked_address():
    """A name with an unreachable first address (say IPv6 without a route) is reached on the next."""
    r = Receiver()  # listens on 127.0.0.1 only: 127.0.0.2 refuses the connection
    try:
        port = r.server.server_port
        with delivery._pinned_session(["127.0.0.2", "127.0.0.1"]) as session:
            answer = session.post(f"http://hooks.example.test:{port}/hook", data=b"{}", timeout=5)
        assert answer.status_code == 204 and len(r.requests) == 1
    finally:
        r.server.shutdown()


def resolves_to(monkeypatch, host: str, addresses: list[str]) -> None:
    """Make `host` resolve to `addresses`, in this order (other names resolve as usual)."""
    real = socket.getaddrinfo

    def resolve(name, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name != host:
            return real(name, port, *args, **kwargs)
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port or 0, 0, 0)) if ":" in a
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def test_the_checked_addresses_keep_the_resolvers_order(settings, monkeypatch):
    """The resolver's order is its preference (RFC 6724: IPv4 before IPv6 here), each address once;
    the connection tries them in that order, never sorted."""
    settings.WEBHOOK_ALLOW_PRIVATE = False
    resolves_to(monkeypatch, "hooks.example.test", ["8.8.8.8", "2001:4860:4860::8888", "8.8.8.8", "1.1.1.1"])
    assert delivery.checked_destination("https://hooks.example.test/hook") == \
        ("", ["8.8.8.8", "2001:4860:4860::8888", "1.1.1.1"])


@pytest.fixture
def loopback_counts_as_public(settings, monkeypatch) -> None:
    """Private addresses refused (the production default), except that 127.0.0.x stand in for
    public servers, so a delivery to a name can reach receivers on this machine pinned."""
    settings.WEBHOOK_ALLOW_PRIVATE = False
    real = delivery.non_public_address
    monkeypatch.setattr(delivery, "non_public_address", lambda address: not address.startswith("127.0.0.") and real(address))


def delivered_to(alice, url: str) -> WebhookMessage:
    hook = Webhook.objects.create(owner=alice, kind="training", object_id=1, url=url, events=["completed"])
    message = WebhookMessage.objects.create(webhook=hook, event="completed", body='{"id": 1}')
    assert delivery.deliver(str(message.pk), 1) is None, WebhookAttempt.objects.filter(message=message).first().error
    message.refresh_from_db()
    return message


def test_a_delivery_whose_first_address_cannot_be_reached_goes_to_the_next(alice, monkeypatch, loopback_counts_as_public):
    """A name whose first address refuses the connection (say IPv6 without a route) is delivered
    on its next one, in one attempt."""
    r = Receiver()  # on 127.0.0.1 only: nothing listens on 127.0.0.2 at that port
    try:
        resolves_to(monkeypatch, "hooks.example.test", ["127.0.0.2", "127.0.0.1"])
        message = delivered_to(alice, f"http://hooks.example.test:{r.server.server_port}/hook")
        assert message.delivered_at and not message.failed_at
        assert [(a.number, a.status_code, a.error) for a in WebhookAttempt.objects.filter(message=message)] == [(1, 204, "")]
        assert [json.loads(request["body"]) for request in r.requests] == [{"id": 1}]
    finally:
        r.server.shutdown()


def test_a_delivery_goes_to_the_address_the_resolver_put_first(alice, monkeypatch, loopback_counts_as_public):
    """Both addresses answer: the request goes to the first one DNS gave, as a plain lookup would."""
    second = Receiver()
    first = Receiver(host="127.0.0.2", port=second.server.server_port)
    try:
        resolves_to(monkeypatch, "hooks.example.test", ["127.0.0.2", "127.0.0.1"])
        message = delivered_to(alice, f"http://hooks.example.test:{second.server.server_port}/hook")
        assert message.delivered_at
        assert len(first.requests) == 1 and second.requests == []
    finally:
        first.server.shutdown()
        second.server.shutdown()
