from django.urls import path

from gallery import views

app_name = "gallery"
urlpatterns = [
    path("gallery/", views.browse, name="browse"),
    path("gallery/<int:pk>/", views.model_detail, name="model_detail"),
    path("generate/", views.generate, name="generate"),
]
