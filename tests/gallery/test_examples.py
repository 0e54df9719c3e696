"""Examples: their settings in words; a sample's own seed, steps and size (not the training's), so
"Try these settings" remakes it; the publishing page offers only what is not an example yet."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse

from gallery import services_gallery
from gallery.models import GalleryExample, Generation, GenerationImage
from tests.conftest import make_image_bytes
from tests.gallery.test_gallery import add_sample
from trainer.engine.presets import preset_for

pytestmark = pytest.mark.django_db

PROMPTS = ["a photo of zqx", "zqx in the snow"]


def job_with_prompts(make_job, owner):
    job = make_job(owner)
    job.config = {**job.config, "seed": 7, "sample_prompts": PROMPTS}
    job.save()
    return job


def generated_images(job, count: int = 1, height: int = 64, scale: float = 1.0) -> list[GenerationImage]:
    """A succeeded generation of the job's owner with its LoRA ("zqx on a beach", seed 77 and up)."""
    g = Generation.objects.create(owner=job.owner, prompt="zqx on a beach", base_model="tiny", seed=77, steps=3,
                                  guidance=2.5, width=64, height=height, state="succeeded", num_images=count,
                                  loras=[{"kind": "training", "id": job.pk, "scale": scale, "training_id": job.pk, "label": "Zqx"}])
    images = [GenerationImage(generation=g, index=index, seed=77 + index) for index in range(count)]
    for image in images:
        image.image.save("i.png", ContentFile(make_image_bytes(64, height)), save=True)
    return images


def examples_on_page(model) -> list[tuple[str, dict[str, list[str]]]]:
    """Each example's settings line and its "Try these settings" query, as the public page shows them."""
    page = Client().get(model.get_absolute_url()).content.decode()
    lines = [html.unescape(t).strip() for t in re.findall(r'<p class="muted example-settings">(.*?)</p>', page, re.S)]
    tries = [parse_qs(urlsplit(html.unescape(u)).query) for u in re.findall(r'<a class="button secondary small" href="([^"]+)">Try these settings', page)]
    assert len(lines) == len(tries) == model.examples.count()
    return list(zip(lines, tries))


def test_a_sample_example_carries_the_seed_steps_and_size_it_was_drawn_with(alice, make_job):
    job = job_with_prompts(make_job, alice)
    add_sample(job, step=4, prompt=PROMPTS[1])  # the second sample prompt: drawn with seed 7 + 1
    model = services_gallery.draft_for_training(owner=alice, job=job)
    model = services_gallery.gallery_model_publish(model=model)
    preset = preset_for("tiny")
    example = model.examples.get()
    assert {k: example.settings[k] for k in ("seed", "steps", "guidance", "width", "height")} == {
        "seed": 8, "steps": preset.sample_steps, "guidance": preset.sample_guidance, "width": 64, "height": 64}
    [(line, query)] = examples_on_page(model)
    assert line == (f"Base: tiny · From the training's sample at step 4 · Seed 8 · {preset.sample_steps} steps · "
                    f"guidance {preset.sample_guidance:g} · 64×64")
    assert query["seed"] == ["8"] and query["steps"] == [str(preset.sample_steps)] and query["size"] == ["64x64"]
    assert query["guidance"] == [str(preset.sample_guidance)] and query["prompt"] == [PROMPTS[1]]
    # The generation page opens with those settings, the seed fixed.
    client = Client()
    client.force_login(alice)
    text = client.get(reverse("gallery:generate") + "?" + urlencode(query, doseq=True)).content.decode()
    assert 'name="seed" id="id_seed" value="8"' in text and 'data-value="64x64"' in text
    assert '<option value="fixed" selected>' in text


def test_an_old_sample_example_shows_its_real_seed_or_none(alice, make_job):
    """Rows stored before the settings were recorded carry the training's seed (7), which made only
    the first prompt's sample: the page works the real one out, and claims none it cannot know."""
    job = job_with_prompts(make_job, alice)
    add_sample(job, step=4, prompt=PROMPTS[0])
    model = services_gallery.draft_for_training(owner=alice, job=job)
    for prompt in (PROMPTS[1], "a prompt the training never had"):
        GalleryExample.objects.create(gallery_model=model, prompt=prompt, position=5, image="x.png",
                                      settings={"seed": 7, "base_model": "tiny", "source": "training sample, step 4"})
    model = services_gallery.gallery_model_publish(model=model)
    shown = {q["prompt"][0]: (line, q) for line, q in examples_on_page(model)}
    assert "Seed 8 ·" in shown[PROMPTS[1]][0] and shown[PROMPTS[1]][1]["seed"] == ["8"]
    line, query = shown["a prompt the training never had"]
    assert "Seed unknown" in line and "seed" not in query, "no seed is claimed: Try draws a random one"


def test_settings_read_as_words_without_raw_keys_or_a_trailing_dot(alice, make_job):
    job = job_with_prompts(make_job, alice)
    add_sample(job)
    model = services_gallery.draft_for_training(owner=alice, job=job)
    [image] = generated_images(job, height=48, scale=0.9)
    services_gallery.example_add_from_generation(owner=alice, model=model, image=image)
    model = services_gallery.gallery_model_publish(model=model)
    lines = [line for line, _ in examples_on_page(model)]
    assert lines[1] == "Base: tiny · Seed 77 · 3 steps · guidance 2.5 · 64×48 · this model ×0.9"
    for line in lines:
        assert "base_model" not in line and "source" not in line and not line.endswith("·")


def test_publish_page_does_not_offer_what_is_already_an_example(alice, alice_client, make_job):
    job = job_with_prompts(make_job, alice)
    first, extra = add_sample(job, step=4), add_sample(job, step=2)  # the first examples: the last sample of each prompt
    url = reverse("gallery:publish", args=[job.pk])

    def checkbox(page: str, name: str, pk: int) -> str:
        return re.search(rf'<input type="checkbox" name="{name}" value="{pk}"[^>]*>', page).group(0)

    page = alice_client.get(url).content.decode()  # unsaved draft: the first sample becomes an example on save
    assert "disabled" in checkbox(page, "sample", first.pk) and "disabled" not in checkbox(page, "sample", extra.pk)
    model = services_gallery.draft_for_training(owner=alice, job=job)
    images = generated_images(job, count=2)
    services_gallery.example_add_from_generation(owner=alice, model=model, image=images[0])
    page = alice_client.get(url).content.decode()
    assert "disabled" in checkbox(page, "sample", first.pk) and "disabled" in checkbox(page, "image", images[0].pk)
    assert "disabled" not in checkbox(page, "sample", extra.pk) and "disabled" not in checkbox(page, "image", images[1].pk)
    assert page.count("already an example") == 2
    answer = alice_client.post(url, {"action": "add", "sample": [extra.pk], "image": [images[1].pk]}, follow=True)
    assert "Added 2 example(s)." in answer.content.decode()
    page = answer.content.decode()
    assert 'id="all-added"' in page and 'value="add"' not in page, "nothing is left to add"


def test_a_sample_seed_past_the_generation_range_is_not_claimed():
    """A training seeded at the top of the range draws its second sample with seed 2**32, which
    the generation page refuses: "Try these settings" then carries no seed rather than a bad one."""
    from gallery.example_settings import sample_settings
    from trainer.models import TrainingJob

    job = TrainingJob(base_model="tiny", config={"seed": 2**32 - 1, "sample_prompts": ["a", "b"], "resolution": 64})
    assert sample_settings(job, "a", 4)["seed"] == 2**32 - 1
    assert "seed" not in sample_settings(job, "b", 4)
