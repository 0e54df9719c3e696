"""Dataset pages (placeholder until the dataset studio lands)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from trainer.models import Dataset


@login_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    datasets = Dataset.objects.filter(owner=request.user)
    return render(request, "trainer/dataset_list.html", {"datasets": datasets, "area": "datasets"})


@login_required
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=pk, owner=request.user)
    return render(request, "trainer/dataset_detail.html", {"dataset": dataset, "area": "datasets"})
