from django.urls import re_path

from flux_studio.consumers import EventsConsumer

websocket_urlpatterns = [
    re_path(r"^ws/events/(?P<kind>[a-z]+)/(?P<object_id>\d+)/$", EventsConsumer.as_asgi()),
]
