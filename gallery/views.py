"""Gallery and generation pages (placeholders until those issues land)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from gallery.models import GalleryModel


def browse(request: HttpRequest) -> HttpResponse:
    models = GalleryModel.objects.filter(published=True)
    return render(request, "gallery/browse.html", {"models": models, "area": "gallery"})


def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(GalleryModel, pk=pk, published=True)
    return render(request, "gallery/model_detail.html", {"model": model, "area": "gallery"})


@login_required
def generate(request: HttpRequest) -> HttpResponse:
    return render(request, "gallery/generate.html", {"area": "generate"})
