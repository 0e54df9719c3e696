"""In Chromium: publish a finished training, find it in the gallery as someone else, like it, try it."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile

from tests.browser.conftest import screenshot, sign_up
from tests.browser.test_generate import finished_training
from tests.conftest import make_image_bytes
from trainer.models import TrainingSample

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_publish_browse_like_and_try(page, chromium, studio, tmp_path):
    sign_up(page, "hana")
    job = finished_training("hana", tmp_path)
    sample = TrainingSample(job=job, step=4, prompt="a photo of zqx")
    sample.image.save("s.png", ContentFile(make_image_bytes(64, 64)), save=True)

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
    other.wait_for_function("document.getElementById('like-count').textContent === '1'")
    other.reload()
    assert other.locator("#like-button").get_attribute("aria-pressed") == "true"
    screenshot(other, "gallery-02-model-page")
    other.click("#try-it")
    other.wait_for_url("**/generate/?model=*")
    assert other.input_value("#id_prompt") == "a photo of zqx"
    assert other.input_value("select[name=lora]").startswith("gallery:")
    other.context.close()
