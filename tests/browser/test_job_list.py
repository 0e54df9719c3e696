"""In Chromium: a long trainings list comes a page at a time on a phone, its filter and page links
fit the screen and lead on, keeping the filter; a running training's row follows it live."""

from __future__ import annotations

import pytest
from django.urls import reverse

from flux_studio import events
from tests.browser.test_training_page import log_in
from tests.browser.test_training_page_live import end, progress, studio, training  # noqa: F401  (fixtures: web server, no worker; a running job)
from tests.jobs.test_job_pages_list import make_jobs
from trainer.models import JobState, TrainingJob

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


def test_a_running_trainings_row_follows_it_live(chromium, studio, alice, training):  # noqa: F811
    TrainingJob.objects.filter(pk=training.pk).update(step=3)
    # History from before the page: a resumed training's old "canceled" (shown, it would end the row's
    # watch) and older progress. The row is drawn from the training's row; only newer events move it.
    events.publish(training.topic, "state", {"state": JobState.CANCELED, "step": 2, "total": training.total_steps})
    progress(training, 2)
    make_jobs(alice, 2)  # finished ones beside it
    context = chromium.new_context(base_url=studio.url)
    page = context.new_page()
    try:
        log_in(page, "alice", "correct horse battery")
        page.goto(reverse("trainer:job_list"))
        row = page.locator(f"tr[data-job='{training.pk}']")
        total = training.total_steps
        assert row.locator(".badge").text_content() == "Training"
        assert row.locator(".job-progress").text_content() == f"3 / {total}"
        progress(training, 5)
        row.locator(".job-progress", has_text=f"5 / {total}").wait_for(timeout=10_000)
        assert row.locator(".badge").text_content() == "Training"
        # Its worker died: back in the queue, from its checkpoint's step.
        events.publish(training.topic, "state", {"state": JobState.QUEUED, "step": 4, "total": total})
        row.locator(".badge.queued", has_text="Queued").wait_for(timeout=10_000)
        assert row.locator(".job-progress").text_content() == f"4 / {total}"
        end(training, JobState.SUCCEEDED, "Finished.")
        row.locator(".badge.succeeded", has_text="Succeeded").wait_for(timeout=10_000)
        assert row.get_attribute("data-state") == "succeeded"
    finally:
        context.close()
