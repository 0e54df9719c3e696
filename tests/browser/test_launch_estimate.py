"""In Chromium: the presets' time estimates on the launch page follow the memory mode picked under
Advanced settings, live, for whichever base is chosen (static/js/launch.js), and that mode is
what the launched training runs in."""

from __future__ import annotations

import pytest

from tests.browser.test_training_page import log_in
from tests.browser.test_training_page_live import studio  # noqa: F401  (the web server alone, no worker)
from trainer.models import TrainingJob

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_switching_the_memory_mode_changes_the_shown_estimates(page, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    log_in(page, "alice", "correct horse battery")
    page.goto(f"/trainings/launch/{dataset.pk}/")
    balanced = page.locator("#preset-balanced-figures")
    # each card: its name, then the explanation, then the figures, each on its own line, in plain text
    explanation = page.locator("#preset-balanced-explanation")
    assert balanced.bounding_box()["y"] > explanation.bounding_box()["y"] + explanation.bounding_box()["height"] - 1
    assert balanced.evaluate("e => getComputedStyle(e).fontWeight") == "400"
    page.select_option("#base_model", "flux-dev")
    assert balanced.text_content().endswith("· about 10 min (fast memory mode)")

    page.click("summary")  # Advanced settings, where the memory mode is
    page.select_option("#memory_mode", "low")
    assert balanced.text_content().endswith("· about 17 min (low memory mode)")  # 0.95 s a step, not 0.50
    assert page.locator("#preset-fast-figures").text_content().endswith("(low memory mode)")
    page.select_option("#base_model", "demo")  # the mode holds when the base changes
    assert balanced.text_content() == "200 steps · rank 16 · lr 0.0004 · 64 px · about 50 s (low memory mode)"
    page.select_option("#memory_mode", "fast")
    assert balanced.text_content() == "200 steps · rank 16 · lr 0.0004 · 64 px · about 30 s (fast memory mode)"

    page.select_option("#memory_mode", "low")
    page.check("input[name=preset][value=balanced]")
    page.click("#launch")
    page.wait_for_url("**/trainings/*/")
    job = TrainingJob.objects.get()
    assert (job.base_model, job.total_steps, job.config["memory_mode"]) == ("demo", 200, "low")


def test_the_caption_length_warning_follows_the_chosen_base(page, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    long, short = dataset.photos.order_by("pk")
    long.caption = "zxq " + "on a long red sofa by the window in soft light " * 3
    short.caption = "zxq on a mat"
    long.save()
    short.save()
    log_in(page, "alice", "correct horse battery")
    page.goto(f"/trainings/launch/{dataset.pk}/?base_model=flux-dev")
    note = page.locator("#caption-room")
    assert note.is_hidden()  # no FLUX.1 tokenizer on this machine: nothing to count with
    page.select_option("#base_model", "demo")
    assert note.is_visible() and note.text_content().startswith("1 of 2 captions is longer than the 16 T5 tokens")
    page.select_option("#base_model", "flux-dev")
    assert note.is_hidden()
