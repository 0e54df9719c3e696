"""Private stays private: a draft's title, image and download URLs appear on no page or API answer
for anyone else, unpublished files answer 404, and published files are cached only briefly."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from gallery import services_gallery
from flux_studio.api.tokens import token_create
from tests.api.conftest import ApiClient
from tests.gallery.test_gallery import add_sample, published

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_token(bob) -> str:
    return token_create(owner=bob, name="bob script")[1]


def file_urls(model) -> list[str]:
    """Every URL under which the model's files are served, on the web and in the API."""
    urls = [reverse("gallery:model_download", args=[model.pk, kind]) for kind in ("diffusers", "kohya")]
    urls += [f"/api/v1/models/{model.pk}/files/{kind}" for kind in ("weights", "kohya_weights")]
    for example in model.examples.all():
        urls += [reverse("gallery:example_image", args=[example.pk]), f"/api/v1/models/{model.pk}/examples/{example.pk}"]
    return urls


@pytest.fixture
def draft_and_public(alice, make_job):
    public = published(alice, make_job(alice, trigger="pubw"), title="Public cats")
    published(alice, make_job(alice, trigger="birdw"), title="Public birds")  # fills the "More from" list
    job = make_job(alice, "two", trigger="sekrit")
    add_sample(job, prompt="a photo of sekrit")
    draft = services_gallery.draft_for_training(owner=alice, job=job)
    draft.title = "Hidden dogs"
    draft.save()
    return draft, public


def test_a_draft_appears_nowhere_for_others(draft_and_public, bob_client, bob_token):
    draft, public = draft_and_public
    secrets = ["Hidden dogs", "sekrit", f"gallery:{draft.pk}", *file_urls(draft),
               *[e.image.name for e in draft.examples.all()], *[e.thumbnail.name for e in draft.examples.all()]]
    web_pages = [reverse("gallery:browse"), reverse("gallery:browse") + "?q=Hidden", reverse("gallery:browse") + "?sort=used",
                 reverse("gallery:browse") + "?q=sekr&sort=liked", public.get_absolute_url()]
    api_pages = ["/api/v1/models", "/api/v1/models?q=Hidden", "/api/v1/models?q=sekr&sort=used", f"/api/v1/models/{public.pk}"]
    seen = []
    for client in (Client(), bob_client):
        for path in web_pages:
            response = client.get(path)
            assert response.status_code == 200, path
            seen.append((path, response.content.decode()))
    for api in (ApiClient(None), ApiClient(bob_token)):
        for path in api_pages:
            response = api.get(path)
            assert response.status_code == 200, path
            seen.append((path, response.content.decode()))
    # Another user's generation page lists the LoRAs they may use: never the draft.
    for path in (reverse("gallery:generate"), reverse("gallery:generate") + f"?model={draft.pk}"):
        seen.append((path, bob_client.get(path).content.decode()))
    assert "Public cats" in seen[-1][1], "the published model is offered, so the page really lists models"
    leaks = [(path, secret) for path, text in seen for secret in secrets if secret in text]
    assert not leaks, leaks
    more_from = dict(seen)[public.get_absolute_url()]
    assert "Public birds" in more_from, "the owner's other models are listed, the draft among them would show"


def test_after_unpublishing_files_answer_404_to_others(draft_and_public, alice, alice_client, bob_client, bob_token):
    _, model = draft_and_public
    urls = file_urls(model)
    anonymous = Client()
    assert all(anonymous.get(url).status_code == 200 for url in urls)
    services_gallery.gallery_model_unpublish(model=model)
    for url in urls:
        for client in (anonymous, bob_client, ApiClient(None), ApiClient(bob_token)):
            assert client.get(url).status_code == 404, url
        assert alice_client.get(url).status_code == 200, url  # the owner keeps access
    assert anonymous.get(model.get_absolute_url()).status_code == 404


def test_published_files_are_cached_briefly_and_revalidated(draft_and_public, alice_client):
    draft, model = draft_and_public
    thumb_url = reverse("gallery:example_image", args=[model.examples.get().pk]) + "?size=thumb"
    anonymous = Client()
    thumb = anonymous.get(thumb_url)
    assert thumb.status_code == 200
    assert thumb["Cache-Control"] == "public, max-age=300, must-revalidate"
    assert thumb["ETag"] and thumb["Last-Modified"]
    again = anonymous.get(thumb_url, headers={"If-None-Match": thumb["ETag"]})
    assert again.status_code == 304 and again["Cache-Control"].startswith("public")
    since = anonymous.get(thumb_url, headers={"If-Modified-Since": thumb["Last-Modified"]})
    assert since.status_code == 304
    # A revalidation after unpublishing is refused, not confirmed.
    services_gallery.gallery_model_unpublish(model=model)
    assert anonymous.get(thumb_url, headers={"If-None-Match": thumb["ETag"]}).status_code == 404
    # The owner's private files are for the owner's browser only.
    private = alice_client.get(reverse("gallery:example_image", args=[draft.examples.get().pk]))
    assert private["Cache-Control"].startswith("private") and "public" not in private["Cache-Control"]
