from django.urls import include, path

app_name = "trainer"
urlpatterns = [
    path("datasets/", include("trainer.urls_datasets")),
    path("trainings/", include("trainer.urls_jobs")),
]
