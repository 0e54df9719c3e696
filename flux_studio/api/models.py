"""API tables: personal tokens, per-user webhook secrets, webhook subscriptions and deliveries.

Only a SHA-256 of each token is stored: a token is 32 random bytes, so a plain hash is enough
(no slow KDF needed, unlike passwords) and lets every request find its row with one lookup.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid

from django.conf import settings
from django.db import models

TOKEN_PREFIX = "fst_"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_webhook_secret() -> str:
    # Standard Webhooks secrets are "whsec_" + base64 of the key bytes.
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class ApiToken(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=80)
    # The first characters, shown in lists so a person can tell tokens apart without the secret.
    prefix = models.CharField(max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # The token that made this one over POST /tokens; null: made on the tokens page.
    created_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="made")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class WebhookSecret(models.Model):
    """The key a user verifies webhook signatures with; readable by them and rotatable."""

    owner = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_secret")
    secret = models.CharField(max_length=80, default=new_webhook_secret)
    rotated_at = models.DateTimeField(auto_now=True)


class WebhookKind(models.TextChoices):
    TRAINING = "training", "Training"
    PREDICTION = "prediction", "Prediction"


class Webhook(models.Model):
    """A `webhook` URL given when a training or prediction was created through the API."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_webhooks")
    kind = models.CharField(max_length=12, choices=WebhookKind.choices)
    object_id = models.BigIntegerField()
    url = models.URLField(max_length=1000)
    events = models.JSONField(default=list)  # subset of start, output, logs, completed
    start_sent = models.BooleanField(default=False)
    completed_sent = models.BooleanField(default=False)
    last_logs_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["kind", "object_id"])]


class WebhookMessage(models.Model):
    """One event to deliver. The body is frozen when the event happens; retries resend it as is
    with the same webhook-id, so receivers can deduplicate (Standard Webhooks)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="messages")
    event = models.CharField(max_length=12)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    @property
    def msg_id(self) -> str:
        return f"msg_{self.id.hex}"


class WebhookAttempt(models.Model):
    """The delivery log: one row per HTTP attempt."""

    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class FileUpload(models.Model):
    """One POST /files request: the photos it added, so its URL can be a training's `input_images`.

    Like Replicate's file URLs: upload a zip once, then pass `urls.get` of the answer as a
    training's input. The photos stay in their dataset; a training copies them.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_uploads")
    dataset = models.ForeignKey("trainer.Dataset", on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=255, blank=True)  # the uploaded file name(s), for people
    photos = models.ManyToManyField("trainer.Photo", related_name="+")
    rejected = models.JSONField(default=list, blank=True)  # [{"name": ..., "reason": ...}]
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]


class CaptionBulkEdit(models.Model):
    """The last bulk caption edit made on a dataset over the API, kept so that it can be undone.

    The dataset page keeps its last bulk edit in the browser for its Undo button; a script has no
    page, so the studio keeps it here, one per dataset: a newer bulk edit replaces it, an undo
    removes it. `changes` are trainer.datasets.CaptionChange dicts (id, before, after,
    before_source), what the undo puts back and what it checks a caption still reads.
    """

    dataset = models.ForeignKey("trainer.Dataset", on_delete=models.CASCADE, related_name="+")
    op = models.CharField(max_length=20)
    changes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
