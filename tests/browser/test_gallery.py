"""In Chromium: publish a finished training, find it in the gallery as someone else, like it, try it;
a refused publish keeps what was typed; a logged-out like goes to log in; labels and a delete that asks."""

from __future__ import annotations

import pytest

from gallery.models import Generation
from tests.browser.conftest import screenshot, sign_up, wait_for_js
from tests.browser.test_generate import (  # noqa: F401  (studio_without_worker: a fixture)
    add_sample, finished_training, signed_in_page, studio_without_worker,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_publish_browse_like_and_try(page, chromium, studio, tmp_path):
    sign_up(page, "hana")
    job = finished_training("hana", tmp_path)
    add_sample(job)

    page.goto(f"/gallery/publish/{job.pk}/")
    page.fill("#title", "Zqx circles")
    page.fill("#tags", "shapes, test")
    page.select_option("#license", "mit")
    page.click("#publish-button")
    page.wait_for_selector("#unpublish")
    screenshot(page, "gallery-01-published")

    other = chromium.new_context(base_url=studio.url).new_page()
    other.goto("/gallery/?q=circles")
    assert other.locator(".model-card").count() == 1
    sign_up(other, "ivan")
    other.goto("/gallery/?tag=shapes")
    other.click(".model-card")
    assert other.locator("#trigger").text_content() == "zqx"
    assert other.locator("#downloads code.sha").first.text_content().startswith("sha256 ")
    other.click("#like-button")
    wait_for_js(other, "document.getElementById('like-count').textContent === '1'")
    other.reload()
    assert other.locator("#like-button").get_attribute("aria-pressed") == "true"
    screenshot(other, "gallery-02-model-page")
    other.click("#try-it")
    other.wait_for_url("**/generate/?model=*")
    assert other.input_value("#id_prompt") == "a photo of zqx"
    assert other.input_value("select[name=lora]").startswith("gallery:")
    other.context.close()


def test_a_refused_publish_keeps_the_form_and_every_control_is_labelled(chromium, studio_without_worker, tmp_path):
    """The QA walk-through: nine tags and Apache 2.0, Publish; then a logged-out like, the labels, delete."""
    page = signed_in_page(chromium, studio_without_worker, "quinn")
    context = page.context
    job = finished_training("quinn", tmp_path)
    add_sample(job)

    earlier = add_sample(job)
    earlier.step = 2
    earlier.save()

    page.goto(f"/gallery/publish/{job.pk}/")
    assert page.get_by_label("Base model").input_value() == "tiny"
    # Typed details survive adding an example (even an empty, not yet valid title), marked unsaved.
    page.fill("#title", "")
    page.fill("#description", "Typed before adding.")
    page.locator(f"#add-examples input[name=sample][value='{earlier.pk}']").check()
    page.click("#add-examples button[value=add]")
    page.wait_for_selector("#unsaved-details")
    assert (page.input_value("#title"), page.input_value("#description")) == ("", "Typed before adding.")
    assert page.locator(".examples figure.example").count() == 2
    nine = "one, two, three, four, five, six, seven, eight, nine"
    page.fill("#title", "Zqx circles")
    page.fill("#description", "Circles, drawn by a tiny model.")
    page.fill("#tags", nine)
    page.select_option("#license", "apache-2.0")
    page.click("#publish-button")
    page.wait_for_selector("#form-errors")
    assert page.locator("#tags-error").text_content() == "at most 8 tags"
    assert page.get_by_label("Tags (comma separated)").get_attribute("aria-describedby") == "tags-error"
    assert (page.input_value("#title"), page.input_value("#description"), page.input_value("#tags"),
            page.input_value("#license")) == ("Zqx circles", "Circles, drawn by a tiny model.", nine, "apache-2.0")
    screenshot(page, "gallery-03-publish-refused")
    page.fill("#tags", "circles")
    page.click("#publish-button")
    page.wait_for_selector("#unpublish")
    model_url = page.get_attribute("#view-public", "href")

    # Logged out, Like leads to the login form and back to the model.
    visitor = chromium.new_context(base_url=studio_without_worker.url).new_page()
    visitor.goto(model_url)
    visitor.click("#like-button")
    visitor.wait_for_url("**/accounts/login/?next=*")
    visitor.fill("#id_username", "quinn")
    visitor.fill("#id_password", "a long test password 1")
    visitor.click("button[type=submit]")
    visitor.wait_for_url(f"**{model_url}")
    visitor.context.close()

    # The generation page's seed has its label; deleting a generation asks first.
    page.goto("/generate/")
    assert page.get_by_label("Seed", exact=True).get_attribute("id") == "id_seed"
    Generation.objects.create(owner=job.owner, prompt="a red circle", base_model="tiny", seed=1, steps=3, guidance=1.0,
                              width=64, height=64, state="succeeded", loras=[])
    page.goto("/generate/history/")
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click(".delete-form button")
    assert asked and "Delete this generation" in asked[0]
    assert Generation.objects.count() == 1, "dismissed: nothing deleted"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(".delete-form button")
    page.wait_for_selector("text=Generation deleted.")
    assert not Generation.objects.exists()
    context.close()
