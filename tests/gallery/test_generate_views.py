"""The generation page: defaults, validation with clear errors, permissions, enqueue on commit."""

from __future__ import annotations

import pytest
from django.urls import reverse

from gallery.models import GalleryModel, Generation, GenerationState
from trainer.models import JobState, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    """Record enqueued generation ids instead of writing to the GPU queue."""
    calls: list[int] = []
    monkeypatch.setattr("gallery.tasks.generate_images_task", calls.append)
    return calls


def form_data(**overrides):
    data = {"prompt": "a photo of zqx", "base_model": "tiny", "seed_mode": "fixed", "seed": "42", "steps": "3",
            "guidance": "3.5", "size": "64x64", "num_images": "1", "lora": [], "lora_scale": []}
    data.update(overrides)
    return data


def test_page_needs_login_and_offers_defaults_and_own_loras(alice_client, alice, bob, make_job):
    from django.test import Client

    assert Client().get(reverse("gallery:generate")).status_code == 302
    own = make_job(alice)
    others = make_job(bob, trigger="bobword")
    page = alice_client.get(reverse("gallery:generate") + f"?training={own.pk}")
    html = page.content.decode()
    assert page.status_code == 200
    assert f'value="training:{own.pk}"' in html and f"training:{own.pk}\" data-trigger=\"zqx\" data-base=\"tiny\" selected" in html
    assert f"training:{others.pk}" not in html  # bob's private training is not offered
    assert "a photo of zqx" in html
    assert '"steps": 8' in html  # the tiny preset's sampling steps


def test_own_trainings_of_one_dataset_are_told_apart(alice_client, alice, make_dataset, make_job):
    from django.utils import timezone

    dataset = make_dataset(alice, n=1, name="Teapot")
    first, second = make_job(alice), make_job(alice, which="two")
    day = timezone.localtime(timezone.now()).replace(month=3, day=7)
    for job, steps in ((first, 200), (second, 1000)):
        TrainingJob.objects.filter(pk=job.pk).update(dataset=dataset, name="Teapot · zqx", total_steps=steps, finished_at=day)
    html = alice_client.get(reverse("gallery:generate")).content.decode()
    assert f"#{first.pk} Teapot (200 steps, Mar 7) · zqx · tiny" in html
    assert f"#{second.pk} Teapot (1000 steps, Mar 7) · zqx · tiny" in html


def test_valid_request_is_stored_and_enqueued_on_commit(alice_client, alice, make_job, queued, django_capture_on_commit_callbacks):
    job = make_job(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(reverse("gallery:generate"), form_data(lora=[f"training:{job.pk}"], lora_scale=["0.8"]))
    g = Generation.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("gallery:generation_detail", args=[g.pk])
    assert queued == [g.pk]
    assert (g.seed, g.steps, g.width, g.state) == (42, 3, 64, GenerationState.QUEUED)
    assert g.loras == [{"kind": "training", "id": job.pk, "scale": 0.8, "training_id": job.pk, "label": job.name, "trigger_word": "zqx"}]
    page = alice_client.get(response["Location"]).content.decode()
    assert "Position 1 in line" in page and 'data-generation="%d"' % g.pk in page


def test_random_seed_is_chosen_and_shown(alice_client, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(reverse("gallery:generate"), form_data(seed_mode="random", seed=""))
    g = Generation.objects.get()
    assert 0 <= g.seed < 2**32
    page = alice_client.get(reverse("gallery:generation_detail", args=[g.pk])).content.decode()
    assert f'<strong id="gen-seed">{g.seed}</strong>' in page
    # Its page keeps Random for the next Generate (a new picture), not this seed fixed ...
    assert '<option value="random" selected>' in page and f'name="seed" id="id_seed" value=""' in page
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(reverse("gallery:generate"), form_data(seed_mode="random", seed=""))
    assert Generation.objects.count() == 2
    # ... while "make this again" (?from=) and a fixed seed's own page fix the seed it used
    again = alice_client.get(reverse("gallery:generate") + f"?from={g.pk}").content.decode()
    assert '<option value="fixed" selected>' in again and f'name="seed" id="id_seed" value="{g.seed}"' in again
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(reverse("gallery:generate"), form_data(seed_mode="fixed", seed="42"))
    fixed = Generation.objects.get(seed=42)
    page = alice_client.get(reverse("gallery:generation_detail", args=[fixed.pk])).content.decode()
    assert '<option value="fixed" selected>' in page and 'name="seed" id="id_seed" value="42"' in page


@pytest.mark.parametrize("overrides, message", [
    ({"prompt": "   "}, "This field is required"),
    ({"prompt": "x" * 1001}, "at most 1000 characters"),
    ({"steps": "0"}, "greater than or equal to 1"),
    ({"steps": "500"}, "less than or equal to 100"),
    ({"guidance": "99"}, "less than or equal to 20"),
    ({"num_images": "9"}, "<strong>Images:</strong> <a href=\"#id_num_images\">Ensure this value is less than or equal to 4"),
    ({"size": "70x64"}, "multiples of 16"),
    ({"size": "big"}, "choose a size"),
    ({"seed": "-1"}, "greater than or equal to 0"),
    ({"seed": ""}, "give a seed"),
    ({"base_model": "sdxl"}, "Select a valid choice"),
    ({"lora": ["nonsense"]}, "unknown LoRA reference"),
])
def test_bad_input_gives_clear_errors_and_queues_nothing(alice_client, queued, overrides, message, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_client.post(reverse("gallery:generate"), form_data(**overrides))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Generation.objects.exists() and queued == []


def test_loras_one_may_not_use_are_refused(alice_client, alice, bob, make_job, queued, django_capture_on_commit_callbacks):
    bobs = make_job(bob)
    running = make_job(alice, state=JobState.TRAINING)
    draft = GalleryModel.objects.create(owner=bob, training=bobs, title="Bob's", trigger_word="zqx", base_model="tiny")
    other_base = make_job(alice, base="flux-dev")
    mine = make_job(alice)
    cases = [
        ([f"training:{bobs.pk}"], f"training {bobs.pk} does not exist or is not yours"),
        ([f"training:{99999}"], "training 99999 does not exist or is not yours"),  # the same answer: ids tell nothing
        ([f"training:{running.pk}"], f"training {running.pk} has no finished LoRA (it is training)"),
        ([f"gallery:{draft.pk}"], f"model {draft.pk} does not exist or is not published"),  # someone else's draft
        ([f"training:{other_base.pk}"], "trained on flux-dev"),
        ([f"training:{mine.pk}", f"training:{mine.pk}"], "chosen twice"),
    ]
    for refs, message in cases:
        with django_capture_on_commit_callbacks(execute=True):
            response = alice_client.post(reverse("gallery:generate"), form_data(lora=refs, lora_scale=["1"] * len(refs)))
        assert response.status_code == 400 and message in response.content.decode(), refs
    response = alice_client.post(reverse("gallery:generate"), form_data(lora=[f"training:{mine.pk}"], lora_scale=["3"]))
    assert "between -2.0 and 2.0" in response.content.decode()
    assert not Generation.objects.exists() and queued == []


def test_another_persons_model_chosen_twice_is_named_by_its_title_not_its_private_training(
    alice_client, alice, bob, make_job, queued
):
    job = make_job(bob)
    model = GalleryModel.objects.create(owner=bob, training=job, title="Bob's circles", trigger_word="zqx",
                                        base_model="tiny", published=True)
    response = alice_client.post(reverse("gallery:generate"),
                                 form_data(lora=[f"gallery:{model.pk}"] * 2, lora_scale=["1", "0.5"]))
    page = response.content.decode()
    assert response.status_code == 400 and "Bob&#x27;s circles is chosen twice" in page
    assert job.name not in page and queued == []


def test_published_models_of_others_are_usable_and_counted(alice_client, alice, bob, make_job, queued, django_capture_on_commit_callbacks):
    model = GalleryModel.objects.create(owner=bob, training=make_job(bob), title="Bob's", trigger_word="zqx",
                                        base_model="tiny", published=True)
    page = alice_client.get(reverse("gallery:generate") + f"?model={model.pk}").content.decode()
    assert f'value="gallery:{model.pk}"' in page
    with django_capture_on_commit_callbacks(execute=True):
        alice_client.post(reverse("gallery:generate"), form_data(lora=[f"gallery:{model.pk}"], lora_scale=["1"]))
    model.refresh_from_db()
    assert len(queued) == 1 and model.use_count == 0, "a use counts once the images exist (worker), not on request"


def test_settings_again_says_which_lora_is_gone(alice_client, alice, bob, make_job):
    kept, gone = make_job(alice), make_job(bob, which="two")
    model = GalleryModel.objects.create(owner=bob, training=gone, title="Bob's ink", trigger_word="zqx",
                                        base_model="tiny", published=True)
    g = Generation.objects.create(owner=alice, prompt="a photo of zqx", base_model="tiny", seed=5, steps=3, guidance=2.0,
                                  width=64, height=48, num_images=1, loras=[
                                      {"kind": "training", "id": kept.pk, "scale": 0.8, "label": "alice one"},
                                      {"kind": "gallery", "id": model.pk, "scale": 1.0, "label": "Bob's ink"}])
    page = alice_client.get(reverse("gallery:generate") + f"?from={g.pk}").content.decode()
    assert f'value="gallery:{model.pk}" data-trigger="zqx" data-base="tiny" selected' in page
    assert "can no longer be used" not in page
    GalleryModel.objects.filter(pk=model.pk).update(published=False)  # bob unpublishes it
    page = alice_client.get(reverse("gallery:generate") + f"?from={g.pk}").content.decode()
    assert "Left out, as it can no longer be used (deleted or unpublished): Bob&#x27;s ink." in page
    assert f'value="training:{kept.pk}" data-trigger="zqx" data-base="tiny" selected' in page
    assert f'gallery:{model.pk}' not in page


def test_history_settings_again_cancel_and_delete_are_owner_only(alice_client, bob_client, alice, queued):
    g = Generation.objects.create(owner=alice, prompt="a photo of zqx", base_model="tiny", seed=5, steps=3, guidance=2.0,
                                  width=64, height=48, num_images=2)
    history = alice_client.get(reverse("gallery:generation_history")).content.decode()
    assert "a photo of zqx" in history and "seed 5" in history and "64×48" in history
    again = alice_client.get(reverse("gallery:generate") + f"?from={g.pk}").content.decode()
    assert 'name="seed" id="id_seed" value="5"' in again and 'data-value="64x48"' in again
    for name in ("gallery:generation_detail",):
        assert bob_client.get(reverse(name, args=[g.pk])).status_code == 404
    assert bob_client.post(reverse("gallery:generation_cancel", args=[g.pk])).status_code == 404
    assert bob_client.post(reverse("gallery:generation_delete", args=[g.pk])).status_code == 404
    alice_client.post(reverse("gallery:generation_cancel", args=[g.pk]))
    g.refresh_from_db()
    assert g.state == GenerationState.CANCELED
    response = alice_client.post(reverse("gallery:generation_delete", args=[g.pk]), {"next": "https://evil.example/"})
    assert response["Location"] == reverse("gallery:generation_history")
    assert not Generation.objects.exists()


def test_the_seed_has_its_label_and_delete_asks_first(alice_client, alice):
    """(Chromium clicks them in tests/browser/test_gallery.py.)"""
    g = Generation.objects.create(owner=alice, prompt="a photo of zqx", base_model="tiny", seed=5, steps=3, guidance=2.0,
                                  width=64, height=64)
    page = alice_client.get(reverse("gallery:generation_detail", args=[g.pk])).content.decode()
    assert '<label for="id_seed">Seed</label>' in page and 'id="id_seed"' in page
    history = alice_client.get(reverse("gallery:generation_history")).content.decode()
    for html in (page, history):
        form = html[html.index(f'action="{reverse("gallery:generation_delete", args=[g.pk])}"'):]
        assert form.split(">", 1)[0].count('data-confirm="Delete this generation') == 1


def test_queue_info_estimates_the_wait_behind_a_running_training(alice, bob, make_job):
    from gallery.selectors import queue_info

    training = make_job(bob, state=JobState.TRAINING)
    type(training).objects.filter(pk=training.pk).update(step=100, total_steps=500, it_per_s=2.0, eta_seconds=200.0)
    kwargs = dict(owner=alice, prompt="p", base_model="tiny", seed=1, steps=3, guidance=1.0, width=64, height=64)
    earlier = Generation.objects.create(**kwargs, num_images=2)
    mine = Generation.objects.create(**kwargs)
    info = queue_info(mine)
    assert info["position"] == 2 and info["ahead"] == 1
    assert info["training"] == {"step": 100, "total": 500, "eta_s": 200, "it_per_s": 2.0}
    assert info["wait_s"] >= 200 + 2 * info["per_image_s"] - 1
    assert queue_info(earlier)["position"] == 1


def test_a_training_still_loading_counts_its_estimate_in_the_wait(alice, bob, make_job):
    """No step taken yet (the base loads, photos encode): no pace to go by, so the launch page's
    estimate for its steps stands in, rather than a wait of 0 s."""
    from gallery.selectors import queue_info
    from trainer.presets import estimate_seconds

    training = make_job(bob, state=JobState.STARTING)
    type(training).objects.filter(pk=training.pk).update(step=0, total_steps=300)
    training.refresh_from_db()
    g = Generation.objects.create(owner=alice, prompt="p", base_model="tiny", seed=1, steps=3, guidance=1.0, width=64, height=64)
    expected = estimate_seconds({**training.config, "steps": 300}, "tiny", 1)
    info = queue_info(g)
    assert expected > 0 and info["training"]["eta_s"] == expected and info["wait_s"] >= expected


def test_queue_endpoint_gives_the_owner_a_fresh_estimate(alice_client, bob_client, alice, bob, make_job):
    training = make_job(bob, state=JobState.TRAINING)
    type(training).objects.filter(pk=training.pk).update(step=10, total_steps=50, it_per_s=1.0, eta_seconds=40.0)
    g = Generation.objects.create(owner=alice, prompt="p", base_model="tiny", seed=1, steps=3, guidance=1.0, width=64, height=64)
    url = reverse("gallery:generation_queue", args=[g.pk])
    body = alice_client.get(url).json()
    assert body["state"] == "queued" and body["training"]["step"] == 10 and body["wait_s"] >= 40
    type(training).objects.filter(pk=training.pk).update(step=45, eta_seconds=5.0)
    assert alice_client.get(url).json()["training"] == {"step": 45, "total": 50, "eta_s": 5, "it_per_s": 1.0}
    assert bob_client.get(url).status_code == 404
    Generation.objects.filter(pk=g.pk).update(state=GenerationState.RUNNING)
    assert alice_client.get(url).json() == {"state": "running"}
    page = alice_client.get(reverse("gallery:generation_detail", args=[g.pk])).content.decode()
    assert f'data-queue-url="{url}"' in page


def test_size_choices_offer_each_size_once():
    from gallery.defaults import size_choices

    small = [(c.aspect, c.value) for c in size_choices(64)]
    assert len({value for _, value in small}) == len(small)  # 4:3, 3:2 and 16:9 all round to 80x48 at 64 px
    assert ("4:3", "80x48") in small and not any(aspect in ("3:2", "16:9") for aspect, _ in small)
    assert [c.aspect for c in size_choices(1024)] == ["1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16"]


def test_a_generation_page_says_which_lora_its_form_leaves_out(alice_client, alice, bob, make_job):
    """The page of a past generation fills the form to run it again: a LoRA unpublished since is
    named as left out (as "use these settings again" does), never a row quietly showing "none"."""
    gone = make_job(bob, which="two")
    model = GalleryModel.objects.create(owner=bob, training=gone, title="Bob's ink", trigger_word="zqx",
                                        base_model="tiny", published=False)
    older = Generation.objects.create(owner=alice, prompt="an older one", base_model="tiny", seed=5, steps=3,
                                      guidance=2.0, width=64, height=64)
    g = Generation.objects.create(owner=alice, prompt="a photo of zqx", base_model="tiny", seed=5, steps=3, guidance=2.0,
                                  width=64, height=64, state=GenerationState.SUCCEEDED,
                                  loras=[{"kind": "gallery", "id": model.pk, "scale": 1.0, "label": "Bob's ink"}])
    page = alice_client.get(reverse("gallery:generation_detail", args=[g.pk])).content.decode()
    assert "Left out, as it can no longer be used (deleted or unpublished): Bob&#x27;s ink." in page
    # The recent list holds the others only: a page of a first generation shows no empty "Recent".
    assert "an older one" in page and f'href="{reverse("gallery:generation_detail", args=[g.pk])}"' not in page
    older.delete()
    assert "<h2>Recent</h2>" not in alice_client.get(reverse("gallery:generation_detail", args=[g.pk])).content.decode()


@pytest.mark.parametrize("overrides, field, message", [
    ({"prompt": ""}, "prompt", "This field is required"),
    ({"steps": "500"}, "steps", "less than or equal to 100"),
    ({"guidance": "99"}, "guidance", "less than or equal to 20"),
    ({"num_images": "9"}, "num_images", "less than or equal to 4"),
    ({"size": "big"}, "size", "choose a size"),
    ({"seed": ""}, "seed", "give a seed"),
    ({"base_model": "sdxl"}, "base_model", "Select a valid choice"),
])
def test_an_error_is_shown_next_to_its_field_which_points_at_it(alice_client, queued, overrides, field, message):
    """As on the publishing page: the field is marked invalid and described by its own message,
    not only listed in the box at the top."""
    import html
    import re

    page = alice_client.post(reverse("gallery:generate"), form_data(**overrides)).content.decode()
    shown = re.search(rf'<p class="bad field-error" id="id_{field}_error">(.*?)</p>', page, re.S)
    assert shown and message in html.unescape(shown.group(1)), f"no message next to {field}"
    tag = re.search(rf'<(?:input|select|textarea)[^>]*\bid="id_{field}"[^>]*>', page).group(0)
    assert 'aria-invalid="true"' in tag
    assert f"id_{field}_error" in re.search(r'aria-describedby="([^"]*)"', tag).group(1).split()
    others = re.findall(r'<p class="bad field-error" id="id_(\w+)_error">', page)
    assert others == [field], "only the refused field is marked"
