"""In Chromium, without a worker: the launch figures follow the chosen base."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.browser.conftest import LiveStudio
from tests.browser.test_training_page import log_in
from trainer.models import TrainingJob

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def studio(transactional_db, tmp_path: Path) -> Iterator[LiveStudio]:
    """The web server alone: nothing but this test moves the jobs."""
    live = LiveStudio(tmp_path).start(worker=False)
    yield live
    live.stop()


def test_the_preset_figures_follow_the_chosen_base_and_are_what_runs(page, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    log_in(page, "alice", "correct horse battery")
    page.goto(f"/trainings/launch/{dataset.pk}/")
    page.select_option("#base_model", "flux-dev")
    assert page.text_content("#preset-fast-figures").startswith("500 steps · rank 8 · lr 0.001 · 1024 px · about")
    assert "1,000 steps at rank 16" in page.text_content("#preset-balanced-explanation")
    page.select_option("#base_model", "tiny")
    assert page.text_content("#preset-fast-figures").startswith("30 steps · rank 8 · lr 0.001 · 64 px · about")
    assert "60 steps at rank 16" in page.text_content("#preset-balanced-explanation")

    page.check("input[name=preset][value=fast]")
    page.click("#launch")
    page.wait_for_url("**/trainings/*/")
    job = TrainingJob.objects.get()
    assert (job.base_model, job.total_steps, job.config["resolution"]) == ("tiny", 30, 64)
