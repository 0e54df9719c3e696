"""Who may watch a generation's live events: its owner only."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from flux_studio.relay import relay
from flux_studio.routing import websocket_urlpatterns
from gallery.models import Generation

pytestmark = pytest.mark.django_db(transaction=True)


def test_only_the_owner_may_watch_a_generation(alice, bob):
    generation = Generation.objects.create(owner=alice, prompt="p", base_model="tiny", seed=1, steps=3, guidance=1.0,
                                           width=64, height=64)

    async def connect(user) -> tuple[bool, int | None]:
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/events/generation/{generation.pk}/")
        communicator.scope["user"] = user
        connected, code = await communicator.connect()
        if connected:
            await communicator.disconnect()
        return connected, code

    async def scenario() -> None:
        try:
            assert await connect(AnonymousUser()) == (False, 4403)
            assert await connect(bob) == (False, 4403)
            assert (await connect(alice))[0] is True
        finally:
            await relay.stop()

    async_to_sync(scenario)()
