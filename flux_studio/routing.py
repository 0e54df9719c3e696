from django.urls import re_path

from flux_studio.consumers import EventsConsumer, no_such_socket

websocket_urlpatterns = [
    re_path(r"^ws/events/(?P<kind>[a-z]+)/(?P<object_id>\d+)/$", EventsConsumer.as_asgi()),
    # Any other path is refused cleanly (4404) rather than raising "No route found" (an HTTP 500).
    re_path(r"", no_such_socket),
]
