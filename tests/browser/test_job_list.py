"""In Chromium on a phone: a long trainings list comes a page at a time, its filter and page links
fit the screen and lead on, keeping the filter."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.browser.test_training_page import log_in
from tests.browser.test_training_page_live import studio  # noqa: F401  (fixture: the web server, no worker)
from tests.jobs.test_job_pages_list import make_jobs

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_on_a_phone_the_paged_trainings_list_fits_and_its_links_lead_on(chromium, studio, alice):  # noqa: F811
    make_jobs(alice, 70)  # 28 failed or canceled
    context = chromium.new_context(base_url=studio.url, viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    try:
        log_in(phone, "alice", "correct horse battery")
        phone.goto(reverse("trainer:job_list"))
        widths = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        assert phone.evaluate(widths) == [390, 390], "the trainings list is wider than the phone"
        assert phone.locator("table.jobs tbody tr").count() == 25
        phone.get_by_role("navigation", name="Show trainings").get_by_role("link", name="Failed or canceled").click()
        phone.wait_for_url("**/trainings/?state=stopped")
        assert phone.locator("[aria-current=page]", has_text="Failed or canceled").is_visible()
        assert phone.locator("td[data-label=State]").all_text_contents()[:3] == ["Canceled", "Failed", "Canceled"]
        phone.get_by_role("link", name="Next page, older trainings").click()
        phone.wait_for_url("**/trainings/?state=stopped&page=2")
        assert "Page 2 of 2 · 28 trainings" in phone.text_content("#job-pages")
        assert set(phone.locator("td[data-label=State]").all_text_contents()) <= {"Failed", "Canceled"}
        assert phone.evaluate(widths) == [390, 390]
    finally:
        context.close()
