from django.contrib import admin

from flux_studio.models import Event, WorkerHeartbeat


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("worker_id", "queue", "device", "current_task", "last_seen")


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("id", "topic", "kind", "created_at")
    list_filter = ("kind",)
    search_fields = ("topic",)
