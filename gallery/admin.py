from django.contrib import admin

from gallery.models import GalleryExample, GalleryModel, Generation, GenerationImage, Like


@admin.register(GalleryModel)
class GalleryModelAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "published", "like_count", "use_count", "published_at")
    list_filter = ("published", "base_model", "license")
    search_fields = ("title", "trigger_word", "description")


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ("prompt", "owner", "state", "base_model", "created_at")
    list_filter = ("state",)


admin.site.register([GalleryExample, GenerationImage, Like])
