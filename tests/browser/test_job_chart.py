"""In Chromium, without a worker: the loss chart's step axis is marked at whole steps only, for a
short run of a few points as for a long one."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.browser.test_job_page_replay import progress_at
from tests.browser.test_training_page import log_in
from tests.browser.test_training_page_live import studio, training  # noqa: F401  (fixtures: no worker; a running job)
from trainer.models import TrainingJob
from tests.browser.conftest import wait_for_js

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Keeps every chart the page makes (set before the vendored uPlot script defines it).
KEEP_CHARTS = """
window.charts = [];
let real;
Object.defineProperty(window, "uPlot", {
  configurable: true,
  get: () => real,
  set: (Plot) => {
    real = function (...args) { const chart = new Plot(...args); window.charts.push(chart); return chart; };
    Object.assign(real, Plot);
    real.prototype = Plot.prototype;
  },
});
"""


def step_ticks(page, last_step: int) -> list[float]:
    wait_for_js(page, f"document.getElementById('step').textContent === '{last_step}'")
    wait_for_js(page, "window.charts.length === 1 && window.charts[0].axes[0]._splits")
    return page.evaluate("window.charts[0].axes[0]._splits")


@pytest.mark.parametrize("last_step", [3, 240])
def test_the_loss_charts_step_axis_shows_whole_steps(page, training: TrainingJob, last_step):  # noqa: F811
    for step in [1, 2, 3] if last_step == 3 else range(8, last_step + 1, 8):
        progress_at(training, timezone.now(), step)
    page.add_init_script(KEEP_CHARTS)
    log_in(page, "alice", "correct horse battery")
    page.goto(training.get_absolute_url())
    ticks = step_ticks(page, last_step)
    assert len(ticks) >= 2 and all(float(tick).is_integer() for tick in ticks), ticks
