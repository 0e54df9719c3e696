from django.contrib import admin

from trainer.models import Dataset, Photo, TrainingJob, TrainingSample


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "trigger_word", "updated_at")
    search_fields = ("name", "trigger_word", "owner__username")


@admin.register(Photo)
class PhotoAdmin(admin.ModelAdmin):
    list_display = ("original_name", "dataset", "width", "height", "caption_source", "excluded")
    list_filter = ("caption_source", "excluded")


@admin.register(TrainingJob)
class TrainingJobAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "state", "step", "total_steps", "base_model", "worker_id", "created_at")
    list_filter = ("state", "base_model")
    search_fields = ("name", "owner__username", "trigger_word")


admin.site.register(TrainingSample)
