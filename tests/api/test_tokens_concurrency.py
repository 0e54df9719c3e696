"""Two creations of the 50th token at once, for the same owner, make one token, not two.

A creation counts the owner's active tokens, then inserts. A hook holds each creation between the
two steps until the other one has counted too (or 2 s pass), so the race is certain rather than
lucky: without a lock both count 49 and both insert (51 active); with the owner's row locked the
second waits, then counts 50 and is refused. Runs on SQLite and, scaled out, on PostgreSQL.
"""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connections

from flux_studio.api import tokens
from flux_studio.api.models import ApiToken

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]


def test_two_creations_of_the_fiftieth_token_at_once_make_one(alice, monkeypatch):
    for number in range(tokens.MAX_TOKENS - 1):
        tokens.token_create(owner=alice, name=f"t{number}")

    both_counted = threading.Barrier(2, timeout=2)
    insert = ApiToken.objects.create

    def insert_once_both_counted(**fields: object) -> ApiToken:
        try:
            both_counted.wait()
        except threading.BrokenBarrierError:
            pass  # the other creation is waiting for the lock (or was refused): go on alone
        return insert(**fields)

    monkeypatch.setattr(ApiToken.objects, "create", insert_once_both_counted)
    outcomes: list[str] = []

    def create(name: str) -> None:
        try:
            tokens.token_create(owner=alice, name=name)
            outcomes.append("created")
        except ValidationError as exc:
            outcomes.append(" ".join(exc.messages))
        finally:
            connections.close_all()  # this thread's connection; PostgreSQL drops the test database after

    threads = [threading.Thread(target=create, args=(f"racer {n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["You already have 50 active tokens; revoke one first.", "created"]
    assert ApiToken.objects.filter(owner=alice, revoked_at__isnull=True).count() == tokens.MAX_TOKENS
