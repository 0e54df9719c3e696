"""In Chromium: a LoRA that no longer fits the chosen base is taken out and named, never kept on show
while the browser leaves it out of the request; and the generation, history and model pages fit a
phone (390 px) without sideways scrolling, a generation's result first."""

from __future__ import annotations

import re

import pytest
from django.core.files.base import ContentFile

from gallery import services_gallery
from gallery.models import Generation, GenerationImage
from tests.browser.conftest import screenshot
from tests.browser.test_generate import (  # noqa: F401  (studio_without_worker: a fixture)
    add_sample, finished_training, signed_in_page, studio_without_worker,
)
from tests.conftest import make_image_bytes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}


def test_a_lora_that_does_not_fit_a_new_base_is_left_out_and_named(chromium, studio_without_worker, tmp_path):
    page = signed_in_page(chromium, studio_without_worker, "bea")
    job = finished_training("bea", tmp_path)  # trained on tiny
    page.goto(f"/generate/?training={job.pk}")
    assert page.input_value(".lora-select") == f"training:{job.pk}"
    page.select_option("#id_base_model", "demo")
    # The row no longer shows a LoRA that would not be sent, and the page says what it left out.
    assert page.input_value(".lora-select") == ""
    assert page.locator("#lora-note").text_content() == (
        f"Left out, as it does not fit demo: #{job.pk} Zqx tiny (4 steps), trained on tiny.")
    screenshot(page, "generate-04-lora-left-out")
    page.click("#generate-button")
    page.wait_for_url(re.compile(r".*/generate/\d+/$"))
    assert Generation.objects.get().loras == []  # what the page showed is what was asked for
    # Back on the LoRA's own base, picking it again clears the note.
    page.select_option("#id_base_model", "tiny")
    page.select_option(".lora-select", f"training:{job.pk}")
    assert page.locator("#lora-note").text_content() == ""
    page.context.close()


def test_pages_fit_a_phone_and_a_result_comes_first(chromium, studio_without_worker, tmp_path):
    page = signed_in_page(chromium, studio_without_worker, "pia", viewport=PHONE)
    job = finished_training("pia", tmp_path)
    add_sample(job)
    model = services_gallery.draft_for_training(owner=job.owner, job=job)
    model = services_gallery.gallery_model_publish(model=model)  # a sha256 of 64 characters on its page
    long_prompt = "a red circle on a zqx background, " + "x" * 120  # a word longer than a phone is wide
    page.goto("/generate/")
    page.fill("#id_prompt", long_prompt)
    page.click("#generate-button")
    page.wait_for_url(re.compile(r".*/generate/\d+/$"))
    # Where the page opens after Generate, the result is in view, not below the whole form.
    assert page.evaluate("document.getElementById('result').getBoundingClientRect().top") < PHONE["height"] / 2
    screenshot(page, "phone-01-generation")
    done = Generation.objects.create(owner=job.owner, prompt="a red circle", base_model="tiny", seed=1, steps=3,
                                     guidance=1.0, width=64, height=64, num_images=4, state="succeeded", loras=[])
    for index in range(4):  # four thumbnails and four download links in its history row
        image = GenerationImage(generation=done, index=index, seed=1 + index)
        image.image.save("i.png", ContentFile(make_image_bytes(64, 64)), save=False)
        image.thumbnail.save("i.jpg", ContentFile(make_image_bytes(64, 64, fmt="JPEG")), save=False)
        image.save()
    for url in (page.url, "/generate/history/", model.get_absolute_url(), "/gallery/"):
        page.goto(url)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{url} scrolls sideways on a phone: {width} px wide"
    screenshot(page, "phone-02-gallery")
    page.context.close()
