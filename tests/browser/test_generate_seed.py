"""In Chromium: the seed box takes a click and typing while Seed is Random (typing switches the mode
to Fixed), from the keyboard too; and a refused form marks the field next to its message."""

from __future__ import annotations

import re

import pytest

from gallery.models import Generation
from tests.browser.test_generate import signed_in_page, studio_without_worker  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_typing_a_seed_while_random_fixes_it(chromium, studio_without_worker):
    page = signed_in_page(chromium, studio_without_worker, "sid")
    page.goto("/generate/")
    assert page.input_value("#id_seed_mode") == "random"
    assert page.is_enabled("#id_seed"), "the seed box takes a click while Random is chosen"
    page.click("#id_seed")
    page.keyboard.type("1234")
    assert page.input_value("#id_seed") == "1234" and page.input_value("#id_seed_mode") == "fixed"

    # From the keyboard: Tab from the mode reaches the box, typing fixes the seed.
    page.goto("/generate/")
    page.focus("#id_seed_mode")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "id_seed"
    page.keyboard.type("77")
    assert page.input_value("#id_seed_mode") == "fixed"
    page.fill("#id_prompt", "a red circle")
    page.click("#generate-button")
    page.wait_for_url(re.compile(r".*/generate/\d+/$"))
    assert Generation.objects.get().seed == 77
    page.context.close()


def test_a_refused_field_is_marked_next_to_its_message(chromium, studio_without_worker):
    page = signed_in_page(chromium, studio_without_worker, "sue")
    page.goto("/generate/")
    page.fill("#id_prompt", "a red circle")
    page.fill("#id_steps", "500")
    page.click("#generate-button")
    page.wait_for_selector("#form-errors")
    steps = page.locator("#id_steps")
    assert steps.get_attribute("aria-invalid") == "true"
    described = page.locator(f"#{steps.get_attribute('aria-describedby')}")
    assert "less than or equal to 100" in described.text_content()
    assert page.locator("#id_prompt").get_attribute("aria-invalid") is None
    page.context.close()


def test_a_failed_generation_shows_its_error_once_and_keeps_random_for_the_next(chromium, studio_without_worker):
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from gallery import services

    page = signed_in_page(chromium, studio_without_worker, "fay")
    page.goto("/generate/")
    page.fill("#id_prompt", "a red circle")
    page.click("#generate-button")  # Seed: Random
    page.wait_for_url(re.compile(r".*/generate/\d+/$"))
    generation = Generation.objects.get(owner=get_user_model().objects.get(username="fay"))
    # What the worker does when the base cannot load: the row, then its state event
    error = "black-forest-labs/FLUX.1-dev is not in the local cache and this machine is offline"
    Generation.objects.filter(pk=generation.pk).update(state="failed", error=error, finished_at=timezone.now())
    generation.refresh_from_db()
    services.publish_state(generation, error)
    page.locator("#gen-error", has_text="not in the local cache").wait_for()
    assert page.text_content("#gen-message") == "", "the error is shown once, not also as the message above it"
    # the page a Generate led to keeps Seed: Random, so the next Generate draws a new seed
    assert page.input_value("#id_seed_mode") == "random" and page.input_value("#id_seed") == ""
    page.context.close()
