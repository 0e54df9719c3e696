"""Who may watch which event topic.

A topic is "<kind>-<id>" (training-12, dataset-3, generation-7). Each app registers, for the
kinds it owns, a function that says whether a user may watch one object's events; the socket
consumer asks it before accepting. Unknown kinds are refused.
"""

from __future__ import annotations

from typing import Callable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

Authorizer = Callable[[AbstractBaseUser | AnonymousUser, int], bool]
_authorizers: dict[str, Authorizer] = {}


def register_topic(kind: str, authorizer: Authorizer) -> None:
    _authorizers[kind] = authorizer


def topic_for(kind: str, object_id: int) -> str:
    return f"{kind}-{object_id}"


def may_watch(user: AbstractBaseUser | AnonymousUser, kind: str, object_id: int) -> bool:
    authorizer = _authorizers.get(kind)
    return authorizer is not None and authorizer(user, object_id)


def owner_authorizer(model: type, owner_field: str = "owner") -> Authorizer:
    """Authorizer for objects that only their owner may watch."""

    def authorize(user: AbstractBaseUser | AnonymousUser, object_id: int) -> bool:
        if not user.is_authenticated:
            return False
        return model.objects.filter(pk=object_id, **{owner_field: user}).exists()

    return authorize
