"""A new person can sign up in a real browser and lands on their (empty) datasets page."""

import pytest

from tests.browser.conftest import screenshot, sign_up

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_sign_up_in_chromium(page):
    page.goto("/")
    assert "Fine-tune FLUX.1" in page.text_content("h1")
    # The keyboard's first Tab offers to skip the menu; Enter moves the focus to the page's content
    skip = page.locator(".skip-link")
    assert not skip.is_visible() or skip.bounding_box()["y"] < 0
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link" and skip.bounding_box()["y"] >= 0
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    sign_up(page, "erin")
    assert page.locator(".who").text_content() == "erin"
    screenshot(page, "00-signed-up")
