"""The community gallery: publish/unpublish, visibility of models and files, search, likes, downloads."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse

from gallery import services_gallery
from gallery.models import GalleryModel, Generation, GenerationImage, Like
from tests.conftest import make_image_bytes
from trainer.models import JobState, TrainingSample

pytestmark = pytest.mark.django_db


def add_sample(job, step=4, prompt="a photo of zqx"):
    sample = TrainingSample(job=job, step=step, prompt=prompt)
    sample.image.save("s.png", ContentFile(make_image_bytes(64, 64)), save=True)
    return sample


def published(owner, job, **fields):
    add_sample(job)
    model = services_gallery.draft_for_training(owner=owner, job=job)
    for key, value in fields.items():
        setattr(model, key, value)
    model.save()
    return services_gallery.gallery_model_publish(model=model)


def stored_files(settings) -> list:
    return [p for p in (settings.MEDIA_ROOT / "users").rglob("*") if p.is_file()]


def test_publish_page_makes_a_private_draft_then_publishes_and_unpublishes(alice_client, alice, make_job, settings):
    job = make_job(alice)
    add_sample(job)
    url = reverse("gallery:publish", args=[job.pk])
    files_before = stored_files(settings)
    page = alice_client.get(url)
    assert page.status_code == 200 and "first examples when you save or publish" in page.content.decode()
    # Opening the page writes nothing: no draft row, no copied example files.
    assert not GalleryModel.objects.exists() and stored_files(settings) == files_before
    alice_client.post(url, {"action": "save", "title": "Zqx draft", "description": "", "trigger_word": "zqx",
                            "license": "mit", "tags": ""})
    model = GalleryModel.objects.get(training=job)
    assert not model.published and model.examples.count() == 1 and model.examples.get().is_cover
    anonymous = Client()
    assert anonymous.get(model.get_absolute_url()).status_code == 404
    assert model.title not in anonymous.get(reverse("gallery:browse")).content.decode()
    alice_client.post(url, {"action": "publish", "title": "Zqx portraits", "description": "film look", "trigger_word": "zqx",
                            "license": "mit", "tags": "Portrait, film, portrait"})
    model.refresh_from_db()
    assert model.published and model.tags == ["portrait", "film"] and model.license == "mit"
    assert model.lora_sha256 == hashlib.sha256(job.lora_file.open("rb").read()).hexdigest()
    page = anonymous.get(model.get_absolute_url()).content.decode()
    assert "Zqx portraits" in page and model.lora_sha256 in page and f"/generate/?model={model.pk}" in page
    alice_client.post(url, {"action": "unpublish"})
    assert anonymous.get(model.get_absolute_url()).status_code == 404


def test_publishing_needs_a_finished_own_training_and_valid_details(alice_client, bob_client, alice, make_job):
    running = make_job(alice, state=JobState.TRAINING)
    assert alice_client.get(reverse("gallery:publish", args=[running.pk])).status_code == 302
    assert not GalleryModel.objects.exists()
    job = make_job(alice)
    assert bob_client.get(reverse("gallery:publish", args=[job.pk])).status_code == 404
    alice_client.get(reverse("gallery:publish", args=[job.pk]))  # no samples: no examples
    assert not GalleryModel.objects.exists()
    alice_client.post(reverse("gallery:publish", args=[job.pk]), {"action": "publish", "title": "T", "trigger_word": "zqx",
                                                                  "license": "mit", "tags": ""})
    assert not GalleryModel.objects.exists()  # needs an example first: refused, so no draft either
    response = alice_client.post(reverse("gallery:publish", args=[job.pk]), {"action": "save", "title": "", "trigger_word": "two words",
                                                                             "license": "nope", "tags": "<b>"}, follow=True)
    text = response.content.decode()
    assert "give the model a title" in text and "one word" in text and "offered licenses" in text


def test_private_files_are_never_served_to_others(alice, bob_client, make_job):
    job = make_job(alice)
    add_sample(job)
    draft = services_gallery.draft_for_training(owner=alice, job=job)
    example = draft.examples.get()
    for url in (reverse("gallery:example_image", args=[example.pk]), reverse("gallery:model_download", args=[draft.pk, "diffusers"]),
                reverse("gallery:model_download", args=[draft.pk, "kohya"]), draft.get_absolute_url()):
        assert Client().get(url).status_code == 404
        assert bob_client.get(url).status_code == 404


def test_downloads_are_the_real_files_with_public_caching(alice, bob, make_job):
    job = make_job(alice)
    model = published(alice, job, title="Public one")
    for kind, field in (("diffusers", job.lora_file), ("kohya", job.kohya_file)):
        response = Client().get(reverse("gallery:model_download", args=[model.pk, kind]))
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == field.open("rb").read()
        assert response["Cache-Control"].startswith("public")
        assert "attachment" in response["Content-Disposition"] and ".safetensors" in response["Content-Disposition"]
    example = model.examples.get()
    thumb = Client().get(reverse("gallery:example_image", args=[example.pk]) + "?size=thumb")
    assert thumb.status_code == 200 and thumb["Cache-Control"].startswith("public")
    model.refresh_from_db()
    assert model.kohya_size == job.kohya_file.size and model.lora_size == job.lora_file.size


def test_search_filter_sort_and_pagination(alice, bob, make_job):
    a = published(alice, make_job(alice, trigger="ohwx"), title="Watercolor cats", tags=["painting"], like_count=1, use_count=9)
    b = published(bob, make_job(bob, trigger="sks"), title="Neon city", description="cyberpunk streets", tags=["city"],
                  like_count=5, use_count=2)
    c = published(bob, make_job(bob, trigger="zzy", base="flux-dev"), title="Dev portraits", tags=["portrait", "film"])
    services_gallery.draft_for_training(owner=alice, job=make_job(alice, trigger="secretword"))

    def titles(**params):
        html = Client().get(reverse("gallery:browse"), params).content.decode()
        return [m.title for m in (a, b, c) if f'data-model="{m.pk}"' in html], html

    assert titles(q="cyberpunk")[0] == ["Neon city"]
    assert titles(q="ohwx")[0] == ["Watercolor cats"]
    assert titles(q="film")[0] == ["Dev portraits"]
    assert titles(q="secretword")[0] == []  # drafts never show
    assert titles(q="BOB")[0] == ["Neon city", "Dev portraits"]  # by the owner's name
    assert titles(q="bob city")[0] == ["Neon city"]
    assert titles(base="flux-dev")[0] == ["Dev portraits"]
    assert titles(tag="city")[0] == ["Neon city"]
    _, html = titles(sort="liked")
    assert html.index(f'data-model="{b.pk}"') < html.index(f'data-model="{a.pk}"')
    _, html = titles(sort="used")
    assert html.index(f'data-model="{a.pk}"') < html.index(f'data-model="{b.pk}"')
    _, html = titles()
    assert html.index(f'data-model="{c.pk}"') < html.index(f'data-model="{a.pk}"')  # newest first
    _, html = titles(page="99")
    assert "page 1 of 1" in html


def test_likes_count_once_per_user(alice, bob, bob_client, alice_client, make_job):
    model = published(alice, make_job(alice), title="Liked")
    url = reverse("gallery:model_like", args=[model.pk])
    for _ in range(3):
        bob_client.post(url, {"like": "1"})
    alice_client.post(url, {"like": "1"})
    model.refresh_from_db()
    assert model.like_count == 2 and Like.objects.count() == 2
    response = bob_client.post(url, {"like": "0"}, HTTP_ACCEPT="application/json")
    assert response.json() == {"likes": 1, "liked": False}
    assert Client().post(url).status_code == 302 and Like.objects.count() == 1  # anonymous: sent to log in


def test_generated_image_becomes_an_example_with_its_settings(alice, alice_client, bob, bob_client, make_job):
    job = make_job(alice)
    model = services_gallery.draft_for_training(owner=alice, job=job)
    g = Generation.objects.create(owner=alice, prompt="zqx on a beach", base_model="tiny", seed=77, steps=3, guidance=2.5,
                                  width=64, height=64, state="succeeded",
                                  loras=[{"kind": "training", "id": job.pk, "scale": 0.9, "training_id": job.pk, "label": "x"}])
    image = GenerationImage(generation=g, index=0, seed=77)
    image.image.save("i.png", ContentFile(make_image_bytes(64, 64)), save=True)
    assert bob_client.post(reverse("gallery:example_add"), {"image": image.pk, "gallery_model": model.pk}).status_code == 404
    alice_client.post(reverse("gallery:example_add"), {"image": image.pk, "gallery_model": model.pk})
    alice_client.post(reverse("gallery:example_add"), {"image": image.pk, "gallery_model": model.pk})  # a double click
    example = model.examples.get()  # one example, not two copies of the same picture
    assert example.prompt == "zqx on a beach" and example.settings["seed"] == 77 and example.is_cover
    g.delete()  # the example keeps its own copy
    assert example.image.storage.exists(example.image.name)
    model = services_gallery.gallery_model_publish(model=model)
    page = Client().get(model.get_absolute_url()).content.decode()
    assert "Copy prompt" in page and "seed=77" in page and "size=64x64" in page


def test_sorts_that_tie_fall_back_to_the_newest_id(alice, make_job):
    models = [published(alice, make_job(alice, trigger=f"t{i}"), title=f"Tied {i}") for i in range(4)]
    GalleryModel.objects.update(use_count=3, like_count=2, published_at=models[0].published_at)
    newest_first = [m.pk for m in reversed(models)]
    for sort in ("used", "liked", "newest"):
        html = Client().get(reverse("gallery:browse"), {"sort": sort}).content.decode()
        assert sorted(newest_first, key=lambda pk: html.index(f'data-model="{pk}"')) == newest_first, sort


def test_only_images_made_with_the_lora_become_its_examples(alice, alice_client, make_job):
    job, other = make_job(alice), make_job(alice, "two", trigger="other")
    model = services_gallery.draft_for_training(owner=alice, job=job)
    g = Generation.objects.create(owner=alice, prompt="made with the other LoRA", base_model="tiny", seed=1, steps=3,
                                  guidance=2.5, width=64, height=64, state="succeeded",
                                  loras=[{"kind": "training", "id": other.pk, "scale": 1.0, "training_id": other.pk, "label": "o"}])
    image = GenerationImage(generation=g, index=0, seed=1)
    image.image.save("i.png", ContentFile(make_image_bytes(64, 64)), save=True)
    response = alice_client.post(reverse("gallery:example_add"), {"image": image.pk, "gallery_model": model.pk}, follow=True)
    assert "not generated with this model" in response.content.decode()
    assert not model.examples.filter(prompt="made with the other LoRA").exists()
    # The generation page offers only models whose LoRA made the images.
    page = alice_client.get(reverse("gallery:generation_detail", args=[g.pk])).content.decode()
    assert 'id="example-form"' not in page


def test_adding_samples_to_a_new_draft_adds_each_once(alice, alice_client, make_job):
    job = make_job(alice)
    sample = add_sample(job)
    alice_client.post(reverse("gallery:publish", args=[job.pk]), {"action": "add", "sample": [sample.pk]})
    assert GalleryModel.objects.get(training=job).examples.count() == 1


def test_training_summary_reads_like_the_launch_form():
    from gallery.selectors import training_summary
    from trainer.models import TrainingJob

    several = TrainingJob(base_model="tiny", total_steps=60, config={"resolution": [512, 768, 1024], "lora_rank": 16})
    assert training_summary(several)["resolution"] == "512, 768, 1024"
    assert training_summary(TrainingJob(base_model="tiny", config={"resolution": 64}))["resolution"] == "64"


def test_a_tag_outside_the_popular_ones_shows_as_the_filter_in_force(alice, make_job, monkeypatch):
    """A model page's tag link can name a tag the Tag menu does not list (only the 20 most used are):
    the menu shows that tag selected, not "All", so the filter is visible and Apply keeps it."""
    rare = published(alice, make_job(alice, trigger="ohwx"), title="Rare one", tags=["rare"])
    published(alice, make_job(alice, trigger="sks"), title="Common one", tags=["common"])
    monkeypatch.setattr("gallery.selectors.popular_tags", lambda limit=20: ["common"])
    html = Client().get(reverse("gallery:browse"), {"tag": "rare", "base": "flux-schnell"}).content.decode()
    assert "<option selected>rare</option>" in html
    assert "<option selected>flux-schnell</option>" in html
    html = Client().get(reverse("gallery:browse"), {"tag": "rare"}).content.decode()
    assert f'data-model="{rare.pk}"' in html and "<option selected>rare</option>" in html
    assert html.count("<option selected>") == 1  # the tag alone: no base is in force


def test_search_ignores_the_case_of_every_letter_not_only_ascii(alice, django_user_model, make_job):
    """SQLite's LIKE folds A-Z only: "café" must still find "Café", and a name in another script."""
    zoe = django_user_model.objects.create_user("Zoë", password="a long test password 1")
    model = published(zoe, make_job(zoe, trigger="ohwx"), title="Café Ölgemälde", description="ΝΥΧΤΑ σε πόλη")
    for q in ("café", "ÖLGEMÄLDE", "νυχτα", "zoË", "CAFÉ ohwx"):
        html = Client().get(reverse("gallery:browse"), {"q": q}).content.decode()
        assert f'data-model="{model.pk}"' in html, q
    html = Client().get(reverse("gallery:browse"), {"q": "café nothing-like-it"}).content.decode()
    assert f'data-model="{model.pk}"' not in html  # every word must match


def test_a_filter_no_model_could_match_is_neither_applied_nor_offered(alice, make_job):
    """An edited link (?base=zzz, a tag with markup) shows the whole gallery, and its value does not
    join the menus as a choice."""
    model = published(alice, make_job(alice, trigger="ohwx"), title="Shown anyway", tags=["shapes"])
    html = Client().get(reverse("gallery:browse"), {"base": "zzz", "tag": "<b>x"}).content.decode()
    assert f'data-model="{model.pk}"' in html
    assert ">zzz</option>" not in html and "&lt;b&gt;x</option>" not in html
    assert "<option selected>" not in html
