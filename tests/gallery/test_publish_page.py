"""The publishing page: a refused save or publish comes back with what was typed and says why,
next to the field; every label names its field."""

from __future__ import annotations

import html
import re

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from gallery import services_gallery
from gallery.forms import PublishForm
from gallery.models import GalleryModel
from tests.gallery.test_gallery import add_sample, stored_files

pytestmark = pytest.mark.django_db

NINE_TAGS = "cats, pets, film, portrait, soft light, indoor, sofa, winter, grain"


def typed(**fields: str) -> dict[str, str]:
    return {"action": "publish", "title": "Zqx on the sofa", "description": "Our cat, shot on film.\nSoft light.",
            "trigger_word": "zqx", "license": "apache-2.0", "tags": "cats, pets", **fields}


def field_error(page: str, field: str) -> str:
    """The error shown under a field (empty when there is none), and the field points at it."""
    found = re.search(rf'<p class="bad field-error" id="{field}-error">(.*?)</p>', page, re.S)
    if not found:
        return ""
    assert re.search(rf'id="{field}"[^>]*aria-invalid="true" aria-describedby="{field}-error"', page), f"{field} not marked"
    return html.unescape(found.group(1))


def test_too_many_tags_keeps_everything_typed(alice_client, alice, make_job):
    job = make_job(alice)
    add_sample(job)
    url = reverse("gallery:publish", args=[job.pk])
    response = alice_client.post(url, typed(tags=NINE_TAGS))
    assert response.status_code == 400
    page = response.content.decode()
    assert 'value="Zqx on the sofa"' in page
    assert ">Our cat, shot on film.\nSoft light.</textarea>" in page
    assert f'value="{NINE_TAGS}"' in page
    assert '<option value="apache-2.0" selected>' in page and '<option value="mit" selected>' not in page
    assert field_error(page, "tags") == "at most 8 tags"
    assert field_error(page, "title") == "" and field_error(page, "trigger_word") == ""
    assert 'id="form-errors"' in page and "Not published" in page
    assert not GalleryModel.objects.filter(training=job).exists(), "nothing was stored, not even a draft"


def test_a_bad_trigger_word_is_shown_next_to_it_and_the_rest_stays(alice_client, alice, make_job):
    job = make_job(alice)
    add_sample(job)
    response = alice_client.post(reverse("gallery:publish", args=[job.pk]), typed(action="save", trigger_word="two words"))
    assert response.status_code == 400
    page = response.content.decode()
    assert field_error(page, "trigger_word").startswith("one word")
    assert 'id="trigger_word" name="trigger_word" value="two words"' in page
    assert 'value="Zqx on the sofa"' in page and 'value="cats, pets"' in page and "Not saved" in page


def test_a_publish_without_examples_saves_nothing_and_says_why(alice_client, alice, make_job):
    job = make_job(alice)  # no samples: the draft starts without examples
    response = alice_client.post(reverse("gallery:publish", args=[job.pk]), typed())
    page = response.content.decode()
    assert response.status_code == 400 and "add at least one example image" in page
    assert 'value="Zqx on the sofa"' in page
    assert not GalleryModel.objects.filter(training=job).exists(), "as over the API: not published, no draft saved"


@pytest.mark.parametrize("action", ["save", "publish"])
def test_refused_details_leave_no_draft_and_no_copied_files(alice_client, alice, make_job, settings, action):
    job = make_job(alice)
    add_sample(job)  # a new draft would copy it as its first example
    files_before = stored_files(settings)
    response = alice_client.post(reverse("gallery:publish", args=[job.pk]), typed(action=action, trigger_word="two words"))
    assert response.status_code == 400
    page = response.content.decode()
    assert field_error(page, "trigger_word").startswith("one word") and 'value="Zqx on the sofa"' in page
    assert "first examples when you save or publish" in page, "the page still previews the first examples"
    assert not GalleryModel.objects.exists(), "a refused POST makes no draft"
    assert stored_files(settings) == files_before, "nor copies example images"
    assert alice_client.get(reverse("gallery:publish", args=[job.pk])).status_code == 200
    assert not GalleryModel.objects.exists()


def test_a_refused_post_keeps_the_draft_saved_before_as_it_was(alice_client, alice, make_job):
    job = make_job(alice)
    add_sample(job)
    url = reverse("gallery:publish", args=[job.pk])
    assert alice_client.post(url, typed(action="save", tags="cats")).status_code == 302
    draft = GalleryModel.objects.get(training=job)
    for action in ("save", "publish"):
        response = alice_client.post(url, typed(action=action, title="", tags="cats, pets"))
        assert response.status_code == 400 and field_error(response.content.decode(), "title") == "give the model a title"
        assert 'value="cats, pets"' in response.content.decode()
        kept = GalleryModel.objects.get(training=job)
        assert kept.pk == draft.pk and kept.title == "Zqx on the sofa" and kept.tags == ["cats"] and not kept.published
        assert kept.examples.count() == 1


def test_a_good_save_still_redirects_and_stores(alice_client, alice, make_job):
    job = make_job(alice)
    response = alice_client.post(reverse("gallery:publish", args=[job.pk]), typed(action="save"))
    assert response.status_code == 302
    model = GalleryModel.objects.get(training=job)
    assert model.title == "Zqx on the sofa" and model.tags == ["cats", "pets"] and model.license == "apache-2.0"


def test_a_too_long_tag_is_quoted_so_it_looks_too_long(alice_client, alice, make_job):
    long_tag = "watercolor landscapes at golden hour"  # 36 characters; its first 30 alone would be a valid tag
    with pytest.raises(ValidationError) as refused:
        services_gallery.parse_tags(f"cats, {long_tag}")
    message = " ".join(refused.value.message_dict["tags"])
    assert "36 characters" in message and "at most 30" in message and "…" in message
    assert repr(long_tag[:30]) not in message
    job = make_job(alice)
    page = alice_client.post(reverse("gallery:publish", args=[job.pk]), typed(action="save", tags=f"cats, {long_tag}"))
    assert "36 characters" in field_error(page.content.decode(), "tags")
    with pytest.raises(ValidationError) as refused:  # a tag short enough, with a bad character: quoted whole
        services_gallery.parse_tags("good, a/b")
    assert "'a/b'" in " ".join(refused.value.message_dict["tags"])
    with pytest.raises(ValidationError) as refused:  # letters with accents: the message says plain a-z
        services_gallery.parse_tags("Ünïcode")
    assert "a-z (no accents)" in " ".join(refused.value.message_dict["tags"])


def test_every_label_names_its_field(alice_client, alice, make_job):
    job = make_job(alice, base="flux-dev")
    page = alice_client.get(reverse("gallery:publish", args=[job.pk])).content.decode()
    form = page[page.index('id="publish-form"'):page.index("</form>", page.index('id="publish-form"'))]
    for target in re.findall(r"<label([^>]*)>", form):
        found = re.search(r'for="([^"]+)"', target)
        assert found, f"a label without for: <label{target}>"
        assert f'id="{found.group(1)}"' in form, f"no field with id {found.group(1)}"
    assert re.search(r'<input type="text" id="base_model" value="flux-dev" readonly', form)
    assert 'name="base_model"' not in form, "the base is shown, never posted"


def test_the_page_names_the_trained_trigger_and_the_dev_license(alice_client, alice, make_job):
    demo_job, dev_job = make_job(alice, trigger="zqx", base="tiny"), make_job(alice, which="two", trigger="ohwx", base="flux-dev")
    demo_page = alice_client.get(reverse("gallery:publish", args=[demo_job.pk])).content.decode()
    assert "Trained with <strong>zqx</strong>" in demo_page and 'id="dev-license"' not in demo_page
    dev_page = alice_client.get(reverse("gallery:publish", args=[dev_job.pk])).content.decode()
    assert "Trained with <strong>ohwx</strong>" in dev_page
    assert 'id="dev-license"' in dev_page and "FLUX.1 [dev] Non-Commercial License" in dev_page


def test_details_typed_before_an_example_action_come_back_unsaved(alice_client, alice, make_job):
    """Add, Make cover and Remove post the details form: what was typed there is on the page after
    the action, marked as not saved, and nothing of it is stored until Save or Publish."""
    job = make_job(alice)
    first, second = add_sample(job, step=4), add_sample(job, step=2)
    url = reverse("gallery:publish", args=[job.pk])
    page = alice_client.get(url).content.decode()
    assert 'form="publish-form" formnovalidate name="action" value="add"' in page
    answer = alice_client.post(url, typed(action="add", sample=[second.pk]), follow=True)
    page = answer.content.decode()
    assert "Added 1 example(s)." in page and 'id="unsaved-details"' in page
    assert 'value="Zqx on the sofa"' in page and '<option value="apache-2.0" selected>' in page
    model = GalleryModel.objects.get(training=job)
    assert model.title != "Zqx on the sofa" and not model.published, "an example action saves no details"
    assert model.examples.count() == 2
    later = model.examples.exclude(is_cover=True).get()
    answer = alice_client.post(url, typed(action=f"cover:{later.pk}", title=""), follow=True)
    page = answer.content.decode()
    assert "Cover image changed." in page and 'id="title" name="title" value=""' in page
    assert model.examples.get(is_cover=True).pk == later.pk
    page = alice_client.get(url).content.decode()  # shown once: a fresh visit shows the stored details
    assert 'id="unsaved-details"' not in page and f'value="{model.title}"' in page
    stored = {k: str(v) for k, v in PublishForm.of(model).initial.items()}
    answer = alice_client.post(url, {**stored, "action": f"remove:{later.pk}"}, follow=True)
    assert "Example removed." in answer.content.decode() and 'id="unsaved-details"' not in answer.content.decode()
    assert model.examples.count() == 1
