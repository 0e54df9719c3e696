"""Webhooks: subscribe, react to the events table, sign and deliver (Standard Webhooks).

Everything a training or generation does is written as an `Event` row (topic training-<id> or
generation-<id>). A post_save receiver on Event (connected in apps.py) turns the rows that matter
into webhook messages, so the trainer and gallery code needs no webhook calls of its own:

    state (not final, first time) -> "start"     sample / image -> "output"
    log                          -> "logs" (at most one per LOGS_EVERY_S per object)
    state (final)                -> "completed" (once)

The body is the object exactly as GET returns it, frozen when the event happens; it is sent
from the light queue with retries and exponential backoff, one WebhookAttempt row per try.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models.signals import post_save
from django.utils import timezone

from flux_studio.api.common import Urls
from flux_studio.api.models import Webhook, WebhookMessage
from flux_studio.api.problems import field_error
from flux_studio.models import Event

log = logging.getLogger(__name__)

EVENTS = ("start", "output", "logs", "completed")
LOGS_EVERY_S = 3.0
TOPIC_KINDS = {"training": "training", "generation": "prediction"}
FINAL_STATES = ("succeeded", "failed", "canceled")


def parse_webhook(body: dict[str, Any]) -> dict[str, Any] | None:
    """The `webhook` and `webhook_events_filter` of a create request, checked."""
    url = body.get("webhook")
    if url is None:
        if body.get("webhook_events_filter") is not None:
            raise field_error("webhook_events_filter", "only makes sense with `webhook`")
        return None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 1000:
        raise field_error("webhook", "an http(s) URL of at most 1000 characters")
    try:
        port = parts.port  # urllib checks the port only when it is read
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        raise field_error("webhook", "the URL's port must be a number from 1 to 65535")
    if not settings.WEBHOOK_ALLOW_PRIVATE and _internal_host(parts.hostname):
        # Said at once where the URL itself names one; a name is checked after DNS, at delivery.
        raise field_error("webhook", f"{parts.hostname} is not a public address: webhooks are sent from inside the "
                                     "studio's network, so loopback, private and link-local destinations are refused")
    events = body.get("webhook_events_filter", list(EVENTS))
    if not isinstance(events, list) or not events or not all(isinstance(e, str) and e in EVENTS for e in events):
        raise field_error("webhook_events_filter", f"a non-empty list of: {', '.join(EVENTS)}")
    return {"url": url, "events": sorted(set(events), key=EVENTS.index)}


# IPv6 prefixes whose last 32 bits are an IPv4 address: NAT64's well-known and local-use ones
# (RFC 6052, RFC 8215) and SIIT's IPv4-translated ::ffff:0:a.b.c.d (RFC 7915)
CARRIES_IPV4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"),
                ipaddress.ip_network("::ffff:0:0:0/96"))


def non_public_address(address: str) -> bool:
    """Whether an IP address (an IPv6 one may carry a %zone) is loopback, private, link-local or
    otherwise not on the public internet. ValueError for a name. An IPv6 address that carries an
    IPv4 one (IPv4-compatible ::a.b.c.d, NAT64, SIIT, 6to4 2002::/16) is judged by that IPv4
    address too: the network may route it there."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if not ip.is_global:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        low = int(ip) & 0xFFFFFFFF
        embedded = [ip.sixtofour]
        if int(ip) >> 32 == 0 or any(ip in prefix for prefix in CARRIES_IPV4):  # ::a.b.c.d, NAT64, SIIT
            embedded.append(ipaddress.IPv4Address(low))
        return any(v4 is not None and not v4.is_global for v4 in embedded)
    return False


def _internal_host(host: str) -> bool:
    """Whether a URL's host is, as written, localhost or a non-public IP address (no DNS lookup)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return non_public_address(host)
    except ValueError:  # a name
        return False


def webhook_register(*, owner: AbstractBaseUser, kind: str, object_id: int, url: str, events: list[str]) -> Webhook:
    return Webhook.objects.create(owner=owner, kind=kind, object_id=object_id, url=url, events=events)


def webhooks_rearm(*, kind: str, object_id: int) -> None:
    """A resumed object runs again: its webhooks may send `start` and `completed` once more."""
    Webhook.objects.filter(kind=kind, object_id=object_id).update(start_sent=False, completed_sent=False)


def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks signature: "v1," + base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _event_name(event: Event) -> str | None:
    if event.kind == "state":
        return "completed" if event.data.get("state") in FINAL_STATES else "start"
    if event.kind == "log":
        return "logs"
    if event.kind in ("sample", "image"):
        return "output"
    return None


def _claim(hook: Webhook, name: str) -> bool:
    """Compare-and-set so two processes never send the same once-only event twice."""
    rows = Webhook.objects.filter(pk=hook.pk)
    if name == "start":
        return bool(rows.filter(start_sent=False).update(start_sent=True))
    if name == "completed":
        return bool(rows.filter(completed_sent=False).update(completed_sent=True, start_sent=True))
    if name == "logs":
        now = timezone.now()
        cutoff = now - timedelta(seconds=LOGS_EVERY_S)
        return bool(rows.filter(completed_sent=False).exclude(last_logs_at__gt=cutoff).update(last_logs_at=now))
    return not hook.completed_sent


def object_body(kind: str, object_id: int) -> str | None:
    """The object as GET returns it, as JSON text (None when it is gone)."""
    from flux_studio.api.serializers import prediction_object, training_object
    from gallery.models import Generation
    from trainer.models import TrainingJob

    urls = Urls()
    if kind == "training":
        job = TrainingJob.objects.filter(pk=object_id).first()
        return json.dumps(training_object(job, urls)) if job else None
    generation = Generation.objects.filter(pk=object_id).first()
    return json.dumps(prediction_object(generation, urls)) if generation else None


def on_event(event: Event) -> None:
    topic_kind, _, raw_id = event.topic.rpartition("-")
    kind = TOPIC_KINDS.get(topic_kind)
    name = _event_name(event)
    if kind is None or name is None or not raw_id.isdigit():
        return
    hooks = [h for h in Webhook.objects.filter(kind=kind, object_id=int(raw_id)) if name in h.events]
    if not hooks:
        return
    body = object_body(kind, int(raw_id))
    if body is None:
        return
    for hook in hooks:
        if _claim(hook, name):
            message = WebhookMessage.objects.create(webhook=hook, event=name, body=body)
            transaction.on_commit(lambda m=message.pk: _enqueue(m))


def _enqueue(message_id: Any) -> None:
    from flux_studio.api.tasks import deliver_webhook_task

    deliver_webhook_task(str(message_id), 1)


def _on_event_saved(sender: type, instance: Event, created: bool, **kwargs: Any) -> None:
    if not created:
        return
    try:
        on_event(instance)
    except Exception:  # a webhook problem must never break a training or a generation
        log.exception("could not queue webhooks for %s", instance)


def connect() -> None:
    post_save.connect(_on_event_saved, sender=Event, dispatch_uid="api-webhooks")
