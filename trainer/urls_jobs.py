from django.urls import path

from trainer import views_jobs as views

urlpatterns = [
    path("", views.job_list, name="job_list"),
    path("launch/<int:dataset_pk>/", views.job_launch, name="job_launch"),
    path("<int:pk>/", views.job_detail, name="job_detail"),
    path("<int:pk>/cancel/", views.job_cancel_view, name="job_cancel"),
    path("<int:pk>/resume/", views.job_resume_view, name="job_resume"),
    path("<int:pk>/continue/", views.job_continue_view, name="job_continue"),
    path("<int:pk>/delete/", views.job_delete_view, name="job_delete"),
    path("<int:pk>/samples/<int:sample_pk>/", views.job_sample, name="job_sample"),
    path("<int:pk>/download/<str:kind>/", views.job_download, name="job_download"),
]
