"""Send one webhook message: sign, POST, log the attempt, schedule a retry with backoff."""

from __future__ import annotations

import logging
import socket
import time
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.utils import timezone

from flux_studio.api.models import WebhookAttempt, WebhookMessage
from flux_studio.api.tokens import webhook_secret_of
from flux_studio.api.webhooks import non_public_address, sign
from flux_studio.env import env_float

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
TIMEOUT_S = 10
MAX_DELAY_S = 3600
USER_AGENT = "FLUX-Studio-Webhooks/1"


def retry_base_seconds() -> float:
    return getattr(settings, "API_WEBHOOK_RETRY_BASE_S", None) or env_float("API_WEBHOOK_RETRY_BASE_S", 5.0, minimum=0.1)


def backoff_seconds(attempt: int) -> float:
    """Delay before attempt `attempt + 1`: base, 2x base, 4x base ... at most an hour."""
    return min(MAX_DELAY_S, retry_base_seconds() * 2 ** (attempt - 1))


def checked_destination(url: str) -> tuple[str, list[str] | None]:
    """(why `url` must not be called, or ""; the addresses to connect to, or None for any).

    A webhook URL is chosen by the user but called from inside our network, so an address that
    resolves to loopback, a private range or link-local metadata endpoints is refused, checked at
    delivery time, after DNS. The request then connects to an address this check saw, not to
    whatever a second lookup answers: a name that resolves to a public address for the check and
    to an internal one a moment later (DNS rebinding) reaches only the public one.
    """
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return "", None
    host = urlsplit(url).hostname or ""
    try:  # in the resolver's order of preference, each once
        addresses = list(dict.fromkeys(info[4][0] for info in socket.getaddrinfo(host, None)))
    except (socket.gaierror, UnicodeError) as exc:
        return f"cannot resolve {host!r}: {exc}", None
    for address in addresses:
        if non_public_address(address):
            return f"refused: {host} resolves to the non-public address {address} (WEBHOOK_ALLOW_PRIVATE is off)", None
    return "", addresses


class _PinnedConnection:
    """Connects its socket to one of `pinned_addresses`, in order (the next when one cannot be
    reached, as a plain lookup's addresses are tried), while keeping the URL's host for the Host
    header, TLS SNI and certificate checks."""

    pinned_addresses: tuple[str, ...] = ()

    def _new_conn(self):  # type: ignore[no-untyped-def]
        import urllib3

        named = self._dns_host  # type: ignore[attr-defined]
        try:
            for n, address in enumerate(self.pinned_addresses):
                self._dns_host = address
                try:
                    return super()._new_conn()  # type: ignore[misc]
                except urllib3.exceptions.NewConnectionError:
                    if n == len(self.pinned_addresses) - 1:
                        raise
        finally:
            self._dns_host = named


def _pinned_session(addresses: list[str]) -> requests.Session:
    """A requests session whose connections go only to `addresses` (a webhook's checked ones)."""
    import urllib3
    from requests.adapters import HTTPAdapter

    pinned = {"pinned_addresses": tuple(addresses)}
    plain = type("PinnedHTTPConnection", (_PinnedConnection, urllib3.connection.HTTPConnection), pinned)
    tls = type("PinnedHTTPSConnection", (_PinnedConnection, urllib3.connection.HTTPSConnection), pinned)
    pools = {"http": type("PinnedPool", (urllib3.HTTPConnectionPool,), {"ConnectionCls": plain}),
             "https": type("PinnedTLSPool", (urllib3.HTTPSConnectionPool,), {"ConnectionCls": tls})}

    class Pinned(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: the request must go where it was checked
    session.mount("http://", Pinned())
    session.mount("https://", Pinned())
    return session


def deliver(message_id: str, attempt: int) -> float | None:
    """Try once. Returns the delay before the next try, or None when done (sent or given up)."""
    message = WebhookMessage.objects.select_related("webhook__owner").filter(pk=message_id).first()
    if message is None or message.delivered_at or message.failed_at:
        return None
    hook = message.webhook
    timestamp = int(time.time())
    body = message.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message.msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret=webhook_secret_of(hook.owner), msg_id=message.msg_id, timestamp=timestamp, body=body),
    }
    started = time.monotonic()
    status, error = None, ""
    refusal, addresses = checked_destination(hook.url)
    if refusal:
        WebhookAttempt.objects.create(message=message, number=attempt, status_code=None, error=refusal[:300], duration_ms=0)
        WebhookMessage.objects.filter(pk=message.pk).update(failed_at=timezone.now())
        log.warning("webhook %s not sent: %s", message.msg_id, refusal)
        return None
    try:
        if addresses is None:  # WEBHOOK_ALLOW_PRIVATE: any address, as DNS answers
            response = requests.post(hook.url, data=body, headers=headers, timeout=TIMEOUT_S, allow_redirects=False)
        else:
            with _pinned_session(addresses) as session:
                response = session.post(hook.url, data=body, headers=headers, timeout=TIMEOUT_S, allow_redirects=False)
        status = response.status_code
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except requests.RequestException as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    WebhookAttempt.objects.create(message=message, number=attempt, status_code=status, error=error,
                                  duration_ms=int((time.monotonic() - started) * 1000))
    if not error:
        WebhookMessage.objects.filter(pk=message.pk).update(delivered_at=timezone.now())
        return None
    if attempt >= MAX_ATTEMPTS:
        log.warning("webhook %s to %s failed %d times; giving up", message.msg_id, hook.url, attempt)
        WebhookMessage.objects.filter(pk=message.pk).update(failed_at=timezone.now())
        return None
    return backoff_seconds(attempt)
