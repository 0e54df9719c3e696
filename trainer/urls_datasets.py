from django.urls import path

from trainer import views_datasets as views

urlpatterns = [
    path("", views.dataset_list, name="dataset_list"),
    path("<int:pk>/", views.dataset_detail, name="dataset_detail"),
    path("<int:pk>/rename/", views.dataset_rename, name="dataset_rename"),
    path("<int:pk>/delete/", views.dataset_delete, name="dataset_delete"),
    path("<int:pk>/duplicate/", views.dataset_duplicate, name="dataset_duplicate"),
    path("<int:pk>/export/", views.dataset_export, name="dataset_export"),
    path("<int:pk>/health/", views.dataset_health, name="dataset_health"),
    path("<int:pk>/style/", views.dataset_style, name="dataset_style"),
    path("<int:pk>/trigger-check/", views.trigger_check, name="trigger_check"),
    path("<int:pk>/upload/", views.photo_upload, name="photo_upload"),
    path("<int:pk>/photos/action/", views.photos_action, name="photos_action"),
    path("<int:pk>/photos/<int:photo_pk>/caption/", views.photo_caption, name="photo_caption"),
    path("<int:pk>/photos/<int:photo_pk>/<str:kind>/", views.photo_file, name="photo_file"),
    path("<int:pk>/captions/bulk/", views.captions_bulk, name="captions_bulk"),
    path("<int:pk>/captions/restore/", views.captions_restore, name="captions_restore"),
    path("<int:pk>/captions/auto/", views.captions_auto, name="captions_auto"),
]
