from django.urls import path, re_path

from flux_studio.api import (
    views_datasets, views_files, views_models, views_pages, views_predictions, views_tokens, views_trainings,
)

app_name = "api"
urlpatterns = [
    path("openapi.json", views_pages.openapi_document, name="openapi"),
    path("docs/", views_pages.docs, name="docs"),
    path("tokens/", views_pages.tokens_page, name="tokens"),
    path("tokens/<int:pk>/revoke/", views_pages.token_revoke_view, name="token_revoke"),
    path("tokens/webhook-secret/rotate/", views_pages.webhook_secret_rotate_view, name="webhook_secret_rotate"),
    path("account", views_pages.account, name="account"),
    # The JSON collection has no trailing slash, as every other; "tokens/" above is the HTML page.
    path("tokens", views_tokens.tokens_view, name="token_list"),
    path("tokens/<int:pk>", views_tokens.token_view, name="token"),
    path("files", views_files.files, name="files"),
    path("files/uploads/<int:pk>", views_files.file_upload, name="file_upload"),
    path("files/<int:pk>", views_files.file_detail, name="file"),
    path("files/<int:pk>/download", views_files.file_download, name="file_download"),
    path("datasets", views_datasets.datasets_view, name="datasets"),
    path("datasets/<int:pk>", views_datasets.dataset_view, name="dataset"),
    path("datasets/<int:pk>/duplicate", views_datasets.dataset_duplicate, name="dataset_duplicate"),
    path("datasets/<int:pk>/export", views_datasets.dataset_export, name="dataset_export"),
    path("datasets/<int:pk>/files/bulk", views_datasets.dataset_files_bulk, name="dataset_files_bulk"),
    path("datasets/<int:pk>/captions/bulk", views_datasets.dataset_captions_bulk, name="dataset_captions_bulk"),
    path("datasets/<int:pk>/captions/undo", views_datasets.dataset_captions_undo, name="dataset_captions_undo"),
    path("datasets/<int:pk>/captioning", views_datasets.dataset_captioning, name="dataset_captioning"),
    path("trigger-words/check", views_datasets.trigger_word_check, name="trigger_word_check"),
    path("trainings", views_trainings.trainings, name="trainings"),
    path("trainings/<int:pk>", views_trainings.training, name="training"),
    path("trainings/<int:pk>/cancel", views_trainings.training_cancel, name="training_cancel"),
    path("trainings/<int:pk>/resume", views_trainings.training_resume, name="training_resume"),
    path("trainings/<int:pk>/continue", views_trainings.training_continue, name="training_continue"),
    path("trainings/<int:pk>/files/<str:kind>", views_trainings.training_download, name="training_download"),
    path("trainings/<int:pk>/samples/<int:sample_pk>", views_trainings.training_sample, name="training_sample"),
    path("predictions", views_predictions.predictions, name="predictions"),
    path("predictions/<int:pk>", views_predictions.prediction, name="prediction"),
    path("predictions/<int:pk>/cancel", views_predictions.prediction_cancel, name="prediction_cancel"),
    path("predictions/<int:pk>/images/<int:index>", views_predictions.prediction_image, name="prediction_image"),
    path("models", views_models.models, name="models"),
    path("models/<int:pk>", views_models.model, name="model"),
    path("models/<int:pk>/hub", views_models.model_hub_push, name="model_hub_push"),
    path("models/<int:pk>/like", views_models.model_like, name="model_like"),
    path("models/<int:pk>/files/<str:kind>", views_models.model_download, name="model_download"),
    path("models/<int:pk>/examples", views_models.model_examples, name="model_examples"),
    path("models/<int:pk>/examples/<int:example_pk>", views_models.model_example, name="model_example"),
    path("webhooks/default/secret", views_pages.webhook_secret, name="webhook_secret"),
    path("webhooks/default/secret/rotate", views_pages.webhook_secret_rotate, name="webhook_secret_rotate_api"),
    path("webhooks/deliveries", views_pages.webhook_deliveries, name="webhook_deliveries"),
    # Anything else under /api/v1/ answers a JSON 404, not the site's HTML page.
    re_path(r"^.*$", views_pages.not_found, name="not_found"),
]
