"""Whether a long-lived connection's login still holds, asked again while it stays open.

A request is checked once, when it comes; an event stream or a WebSocket can stay open for hours.
Both ask these at intervals, so a log-out, a password change or a deactivated account ends them.
"""

from __future__ import annotations

from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.base import SessionBase
from django.utils.crypto import constant_time_compare


def session_holds(session_class: type[SessionBase], key: str, user_id: int) -> bool:
    """As django.contrib.auth.get_user decides: the session `key` is still `user_id`'s, the user
    is active, and the password is unchanged since it logged in (a password change ends every
    other session). Reads the session afresh from its store."""
    stored = session_class(session_key=key)
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return (user is not None and str(stored.get(SESSION_KEY, "")) == str(user_id)
            and constant_time_compare(stored.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()))
