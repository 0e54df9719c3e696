"""A new person can sign up in a real browser and lands on their (empty) datasets page."""

import pytest

from tests.browser.conftest import screenshot, sign_up

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_sign_up_in_chromium(page):
    page.goto("/")
    assert "Fine-tune FLUX.1" in page.text_content("h1")
    sign_up(page, "erin")
    assert page.locator(".who").text_content() == "erin"
    screenshot(page, "00-signed-up")
