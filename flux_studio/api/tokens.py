"""Token and webhook-secret services: create, authenticate, revoke, rotate."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from flux_studio.api.models import TOKEN_PREFIX, ApiToken, WebhookSecret, hash_token, new_webhook_secret

# Writing last_used_at on every request would make each read a write; once a minute is plenty.
LAST_USED_GRANULARITY = timedelta(minutes=1)
MAX_TOKENS = 50
NAME_CHARS: int = ApiToken._meta.get_field("name").max_length  # 80; the page's field says the same


class TokenRevoked(Exception):
    """The token asking for a new one was revoked while it asked."""


def token_create(*, owner: AbstractBaseUser, name: str, created_by: ApiToken | None = None) -> tuple[ApiToken, str]:
    """A new token; the raw value is returned once and never stored.

    The rules for the page and POST /tokens alike: runs of whitespace in the name become one
    space; a blank name, a name over NAME_CHARS (refused, never cut) and a 51st active token are
    ValidationErrors on "name". `created_by`: the token sending POST /tokens (None on the page),
    shown in the lists so a person can see which script made which token.
    """
    name = " ".join(name.split())
    if not name:
        raise ValidationError({"name": "Give the token a name (e.g. the script that will use it)."})
    if len(name) > NAME_CHARS:
        raise ValidationError({"name": f"Use at most {NAME_CHARS} characters (this name has {len(name)})."})
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        # Creations for one owner take turns from the count to the insert, or two at once could
        # both count 49 and make 51: the owner's row is the lock (PostgreSQL; on SQLite the
        # IMMEDIATE transaction already lets one writer in at a time).
        get_user_model().objects.select_for_update().filter(pk=owner.pk).get()
        # Revoked since it authenticated this request (token_revoke takes the same lock): it
        # must not leave a spare behind.
        if created_by is not None and not ApiToken.objects.filter(pk=created_by.pk, revoked_at__isnull=True).exists():
            raise TokenRevoked
        if ApiToken.objects.filter(owner=owner, revoked_at__isnull=True).count() >= MAX_TOKENS:
            raise ValidationError({"name": f"You already have {MAX_TOKENS} active tokens; revoke one first."})
        token = ApiToken.objects.create(owner=owner, name=name, prefix=raw[:10], key_hash=hash_token(raw),
                                        created_by=created_by)
    return token, raw


def token_authenticate(*, raw: str) -> ApiToken | None:
    token = (
        ApiToken.objects.select_related("owner")
        .filter(key_hash=hash_token(raw), revoked_at__isnull=True, owner__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_GRANULARITY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def token_revoke(*, token: ApiToken) -> int:
    """Revoke `token` and every token it made over the API, and theirs in turn.

    A leaked token could otherwise make itself a spare with POST /tokens that outlives its
    revocation. Tokens already revoked keep their date. Returns how many of the tokens it made
    were still active and are now revoked (0 when it made none, or on a repeat).
    """
    now = timezone.now()
    with transaction.atomic():
        # Creations take turns with this (the owner's row), so none made by a token being revoked
        # commits after its family was read.
        get_user_model().objects.select_for_update().filter(pk=token.owner_id).get()
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now)
        made, parents = 0, [token.pk]
        while parents:  # one level of the family tree at a time
            children = list(ApiToken.objects.filter(created_by__in=parents).values_list("pk", flat=True))
            made += ApiToken.objects.filter(pk__in=children, revoked_at__isnull=True).update(revoked_at=now)
            parents = children
    return made


def webhook_secret_of(user: AbstractBaseUser) -> str:
    row, _ = WebhookSecret.objects.get_or_create(owner=user)
    return row.secret


def webhook_secret_rotate(*, owner: AbstractBaseUser) -> str:
    row, _ = WebhookSecret.objects.get_or_create(owner=owner)
    row.secret = new_webhook_secret()
    row.save(update_fields=["secret", "rotated_at"])
    return row.secret
