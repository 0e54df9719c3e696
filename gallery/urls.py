from django.urls import path

from gallery import views, views_generate, views_publish

app_name = "gallery"
urlpatterns = [
    path("gallery/", views.browse, name="browse"),
    path("gallery/<int:pk>/", views.model_detail, name="model_detail"),
    path("gallery/<int:pk>/download/<str:kind>/", views.model_download, name="model_download"),
    path("gallery/<int:pk>/like/", views.model_like, name="model_like"),
    path("gallery/<int:pk>/hub/", views.model_hub_push, name="model_hub_push"),
    path("gallery/examples/<int:pk>/", views.example_image, name="example_image"),
    path("gallery/examples/add/", views.example_add, name="example_add"),
    path("gallery/publish/<int:job_pk>/", views_publish.publish, name="publish"),
    path("generate/", views_generate.generate, name="generate"),
    path("generate/history/", views_generate.generation_history, name="generation_history"),
    path("generate/<int:pk>/", views_generate.generation_detail, name="generation_detail"),
    path("generate/<int:pk>/queue/", views_generate.generation_queue, name="generation_queue"),
    path("generate/<int:pk>/cancel/", views_generate.generation_cancel, name="generation_cancel"),
    path("generate/<int:pk>/delete/", views_generate.generation_delete, name="generation_delete"),
    path("generate/<int:pk>/images/<int:image_pk>/", views_generate.generation_image, name="generation_image"),
]
