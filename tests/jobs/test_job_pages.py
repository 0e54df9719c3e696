"""What the training pages say: preset figures per base, whole-number settings, the run-again
button, samples once each, labels that tell trainings apart, and texts that agree across pages."""

from __future__ import annotations

import json
import re

import pytest
from django.conf import settings
from django.urls import reverse

from trainer import jobs
from trainer.models import JobState, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_real_queue(monkeypatch):
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)


def launch_url(dataset) -> str:
    return reverse("trainer:job_launch", args=[dataset.pk])


def figures(html: str, preset: str) -> str:
    return re.search(rf'id="preset-{preset}-figures">([^<]*)<', html).group(1)


def embedded_presets(html: str) -> dict:
    return json.loads(re.search(r'<script id="launch-presets" type="application/json">(.*?)</script>', html, re.S).group(1))


def test_the_launch_page_shows_the_chosen_bases_figures_and_they_are_what_runs(alice_client, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    default = alice_client.get(launch_url(dataset)).content.decode()
    assert figures(default, "fast") == embedded_presets(default)[settings.DEFAULT_BASE_MODEL]["fast"]["figures"]
    assert figures(alice_client.get(launch_url(dataset) + "?base_model=demo").content.decode(), "fast").startswith(
        "100 steps · rank 8 · lr 0.001 · 64 px · about")
    flux = alice_client.get(launch_url(dataset) + "?base_model=flux-dev").content.decode()  # without JavaScript
    # <noscript>: links to the other bases' figures; the one shown is not a link
    assert '<a href="?base_model=demo">demo</a>' in flux and '<a href="?base_model=flux-dev">' not in flux
    assert figures(flux, "fast").startswith("500 steps · rank 8 · lr 0.001 · 1024 px · about")
    assert figures(flux, "high").startswith("2,000 steps · rank 32")
    assert 'value="flux-dev" selected' in flux

    # Every offered base's figures ride along for the script that swaps them; each is what a launch stores.
    embedded = embedded_presets(flux)
    assert list(embedded) == settings.BASE_MODELS
    for base in ("tiny", "flux-dev"):
        for preset in ("fast", "high"):
            shown = embedded[base][preset]["figures"]
            alice_client.post(launch_url(dataset), {"preset": preset, "base_model": base})
            job = TrainingJob.objects.latest("id")
            assert shown.startswith(f"{job.total_steps:,} steps · rank {job.config['lora_rank']} · "
                                    f"lr {job.config['learning_rate']:g} · {job.config['resolution']} px"), (base, preset)
    assert embedded["tiny"]["fast"]["figures"].startswith("30 steps")


def test_the_balanced_explanation_names_the_steps_its_figures_show_on_each_base(alice_client, alice, make_dataset):
    embedded = embedded_presets(alice_client.get(launch_url(make_dataset(alice, n=1))).content.decode())
    for base, presets in embedded.items():
        steps = presets["balanced"]["figures"].split(" steps")[0]
        assert f"{steps} steps at rank 16" in presets["balanced"]["explanation"], base
    assert "1,000 steps at rank 16" in embedded["flux-dev"]["balanced"]["explanation"]
    assert "200 steps at rank 16" in embedded["demo"]["balanced"]["explanation"]


@pytest.mark.parametrize("field", ["steps", "lora_rank", "batch_size", "sample_every", "seed"])
def test_a_fraction_where_a_count_is_wanted_says_whole_number(alice_client, alice, make_dataset, field):
    dataset = make_dataset(alice, n=1)
    page = alice_client.post(launch_url(dataset), {"preset": "fast", "base_model": "tiny", field: "1.5"}).content.decode()
    assert f"{field.replace('_', ' ')}: must be a whole number" in page
    assert "is not a number" not in page and not TrainingJob.objects.exists()
    assert 'value="1.5"' in page  # what was typed stays to be corrected


def test_every_bad_setting_is_named_at_once(alice_client, alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    page = alice_client.post(launch_url(dataset), {"preset": "fast", "base_model": "tiny", "steps": "-5",
                                                   "learning_rate": "abc", "lora_rank": "2.5",
                                                   "resolution": "64, 99999"}).content.decode()
    for named in ("steps: ", "learning rate: ", "lora rank: must be a whole number", "resolution: "):
        assert named in page, named
    assert not TrainingJob.objects.exists()


def test_continue_training_for_a_fraction_of_steps_says_whole_number(alice_client, alice, make_dataset):
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
    page = alice_client.post(reverse("trainer:job_continue", args=[job.pk]), {"steps": "1.5"}, follow=True)
    assert "steps: must be a whole number" in page.content.decode() and TrainingJob.objects.count() == 1
    alice_client.post(reverse("trainer:job_continue", args=[job.pk]), {"steps": "7"})
    assert TrainingJob.objects.latest("id").total_steps == 7


def test_the_continue_steps_box_asks_for_what_the_server_takes(alice_client, alice, make_dataset):
    """Required, whole, and within the steps limit, so the browser says so before the server does."""
    from trainer.presets import LIMITS

    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
    page = alice_client.get(reverse("trainer:job_detail", args=[job.pk])).content.decode()
    box = re.search(r'<input type="number" id="more-steps"[^>]*>', page).group(0)
    low, high = LIMITS["steps"]
    assert f'min="{low}"' in box and f'max="{high}"' in box and re.search(r"\brequired\b", box), box
    too_many = alice_client.post(reverse("trainer:job_continue", args=[job.pk]), {"steps": str(high + 1)}, follow=True)
    assert f"must be between {low} and {high}" in too_many.content.decode() and TrainingJob.objects.count() == 1


def test_a_job_that_failed_before_any_checkpoint_offers_run_again(alice_client, alice, make_dataset):
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.FAILED, error="could not load the base model")
    page = alice_client.get(job.get_absolute_url()).content.decode()
    assert ">Run again</button>" in page and "starts over from step 0" in page
    assert "Resume from step" not in page

    alice_client.post(reverse("trainer:job_resume", args=[job.pk]))
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job.error == "" and job.checkpoint_step == 0

    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.CANCELED, step=40, checkpoint_step=40)
    page = alice_client.get(job.get_absolute_url()).content.decode()
    assert ">Resume from step 40</button>" in page and "Run again" not in page


def test_each_sample_on_the_page_names_its_id_so_replayed_events_do_not_add_it_again(alice_client, alice, make_dataset):
    from django.core.files.base import ContentFile

    from tests.conftest import make_image_bytes
    from trainer.models import TrainingSample

    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    ids = []
    for step in (5, 10):
        sample = TrainingSample(job=job, step=step, prompt="a photo of zxq")
        sample.image.save("sample.png", ContentFile(make_image_bytes(32, 32)), save=True)
        ids.append(sample.pk)
    page = alice_client.get(job.get_absolute_url()).content.decode()
    assert re.findall(r'<figure class="sample" data-sample="(\d+)">', page) == [str(i) for i in ids]


def test_the_delete_button_waits_hidden_while_the_job_runs(alice_client, alice, make_dataset):
    """job.js shows it when a run ends live, as a reload would."""
    job = jobs.job_create(owner=alice, dataset=make_dataset(alice, n=1), base_model="tiny")
    assert re.search(r'id="delete-form" hidden', alice_client.get(job.get_absolute_url()).content.decode())
    TrainingJob.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
    page = alice_client.get(job.get_absolute_url()).content.decode()
    assert 'id="delete-form"' in page and not re.search(r'id="delete-form" hidden', page)


def test_trainings_of_one_dataset_are_told_apart_in_the_list(alice_client, alice, make_dataset):
    dataset = make_dataset(alice, n=1)
    first = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny")
    second = jobs.job_create(owner=alice, dataset=dataset, preset="high", base_model="tiny")
    page = alice_client.get(reverse("trainer:job_list")).content.decode()
    assert f"#{first.pk} · pets · zxq" in page and f"#{second.pk} · pets · zxq" in page
    assert "fast · rank 8" in page and "high · rank 32" in page
    assert f'<span class="muted">#{first.pk}</span>' in alice_client.get(first.get_absolute_url()).content.decode()


def test_the_home_page_and_the_datasets_page_ask_for_the_same_number_of_photos(alice_client):
    def wanted(url: str) -> set[str]:
        return set(re.findall(r"\d+–\d+(?= photos| varied photos)", alice_client.get(url).content.decode()))

    assert wanted(reverse("home")) == wanted(reverse("trainer:dataset_list")) == {"10–30"}


def test_a_training_seed_has_the_same_limit_as_a_generation_seed(alice_client, alice, make_dataset):
    """The generation form and the predictions API take 0 to 2**32 - 1 (a BigIntegerField); a training
    keeps its seed in its JSON config, so the launch page and the trainings API take the same."""
    from gallery.forms import GenerationForm

    dataset = make_dataset(alice, n=1)
    top = GenerationForm().fields["seed"].max_value
    assert top == 2**32 - 1
    launch = alice_client.get(launch_url(dataset)).content.decode()
    assert re.search(r'<input type="number" name="seed" id="seed" min="0" max="(\d+)"', launch).group(1) == str(top)

    alice_client.post(launch_url(dataset), {"preset": "fast", "base_model": "tiny", "seed": str(top)})
    assert TrainingJob.objects.get().config["seed"] == top
    refused = alice_client.post(launch_url(dataset), {"preset": "fast", "base_model": "tiny", "seed": str(top + 1)})
    assert f"seed: must be between 0 and {top}" in refused.content.decode() and TrainingJob.objects.count() == 1


def test_the_job_page_says_which_settings_differ_from_the_preset(alice_client, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    plain = jobs.job_create(owner=alice, dataset=dataset, preset="balanced", base_model="tiny")
    changed = jobs.job_create(owner=alice, dataset=dataset, preset="balanced", base_model="tiny",
                              overrides={"steps": 300, "lora_rank": 8, "learning_rate": 1e-3})

    def preset_line(job) -> str:
        html = alice_client.get(reverse("trainer:job_detail", args=[job.pk])).content.decode()
        return re.search(r'<span id="job-preset">(.*?)</span>', html).group(1)

    assert preset_line(plain) == "preset Balanced"
    assert preset_line(changed) == "preset Balanced, changed: steps, learning rate, rank"


def test_the_launch_page_warns_when_captions_are_longer_than_the_base_reads(alice_client, alice, make_dataset):
    """The demo base reads 16 T5 tokens per caption: longer ones are cut while training, which the
    page says per base before the launch (counted with the base's own tokenizer)."""
    dataset = make_dataset(alice, n=3)
    photos = list(dataset.photos.order_by("pk"))
    for photo, caption in zip(photos, ["zxq", "zxq " + "on a long red sofa by the window in soft light " * 3, "zxq cat"]):
        photo.caption = caption
        photo.save()
    html = alice_client.get(launch_url(dataset) + "?base_model=demo").content.decode()
    note = re.search(r'<p class="warn" id="caption-room" role="status" ?>(.*?)</p>', html, re.S)
    assert note and note.group(1).startswith("1 of 3 captions is longer than the 16 T5 tokens the demo base reads")
    per_base = json.loads(re.search(r'<script id="launch-caption-room" type="application/json">(.*?)</script>',
                                    html, re.S).group(1))
    assert per_base["demo"] == note.group(1) and per_base["flux-dev"] == ""  # no FLUX tokenizer here: nothing said
    photos[1].caption = "zxq on a sofa"
    photos[1].save()
    html = alice_client.get(launch_url(dataset) + "?base_model=demo").content.decode()
    assert re.search(r'id="caption-room" role="status" hidden>\s*</p>', html)
