"""The time estimate before launch follows the memory mode: low memory steps take the measured
factor longer (trainer/presets.py says where each factor comes from), and the launch page shows the
estimate of the selected mode, server-rendered (the browser test checks the live switch)."""

from __future__ import annotations

import json
import re

import pytest
from django.conf import settings
from django.urls import reverse

from trainer import jobs
from trainer.models import TrainingJob
from trainer.presets import PRESETS, estimate_seconds, preset_settings, preset_summary


def step_seconds(base: str, mode: str, steps: int = 1000, resolution: int | None = None) -> int:
    """What `steps` steps add to the estimate, loading and encoding left out."""
    values = {**preset_settings("balanced", base), "memory_mode": mode}
    if resolution:
        values["resolution"] = resolution
    return (estimate_seconds({**values, "steps": steps}, base, photo_count=20)
            - estimate_seconds({**values, "steps": 0}, base, photo_count=20))


@pytest.mark.parametrize("base, resolution, fast, low", [
    ("flux-dev", 1024, 500, 950),   # H200: 0.50 s a step fast, 0.95 low (1.9x)
    ("flux-dev", 512, 320, 608),    # the GPU factor applies to every size
    ("demo", None, 100, 200),       # CPU: 0.1 s a step fast, twice that low (2.0x, measured with the engine)
    ("tiny", None, 100, 200),
])
def test_low_memory_steps_take_the_measured_factor_longer(base, resolution, fast, low):
    assert step_seconds(base, "fast", resolution=resolution) == pytest.approx(fast, abs=1)
    assert step_seconds(base, "low", resolution=resolution) == pytest.approx(low, abs=1)


@pytest.mark.parametrize("base", ["flux-dev", "flux-schnell", "demo", "tiny"])
def test_every_preset_estimates_longer_in_low_memory_mode(base):
    for preset in PRESETS:
        values = preset_settings(preset, base)
        assert values["memory_mode"] == "fast"  # what a launch runs unless low is chosen
        fast = estimate_seconds(values, base, 12)
        assert estimate_seconds({**values, "memory_mode": "low"}, base, 12) > fast == estimate_seconds(
            {k: v for k, v in values.items() if k != "memory_mode"}, base, 12)  # no mode: fast


def test_the_preset_figures_name_the_mode_of_their_estimate():
    summary = preset_summary("balanced", "flux-dev", 20)
    assert summary["figures_by_memory_mode"] == {
        "fast": "1,000 steps · rank 16 · lr 0.0004 · 1024 px · about 10 min (fast memory mode)",
        "low": "1,000 steps · rank 16 · lr 0.0004 · 1024 px · about 18 min (low memory mode)",
    }
    assert summary["figures"] == summary["figures_by_memory_mode"]["fast"]


# --- the launch page --------------------------------------------------------------------------

def launch_url(dataset) -> str:
    return reverse("trainer:job_launch", args=[dataset.pk])


def shown_figures(html: str) -> dict[str, str]:
    return {key: re.search(rf'id="preset-{key}-figures">([^<]*)<', html).group(1) for key in PRESETS}


def embedded(html: str) -> dict:
    return json.loads(re.search(r'<script id="launch-presets" type="application/json">(.*?)</script>', html, re.S).group(1))


@pytest.mark.django_db
def test_the_launch_page_shows_the_default_modes_estimate_and_names_it(alice_client, alice, make_dataset):
    html = alice_client.get(launch_url(make_dataset(alice, n=2)) + "?base_model=flux-dev").content.decode()
    figures = shown_figures(html)
    assert figures["balanced"].endswith("· about 10 min (fast memory mode)")
    assert all(text.endswith("(fast memory mode)") for text in figures.values())
    assert 'value="fast" selected' in html
    assert "estimates above are for fast memory mode" in html  # <noscript>: the switch needs JavaScript
    # The script's data: every base's figures for each mode, low taking longer; the shown ones among them.
    data = embedded(html)
    for base in settings.BASE_MODELS:
        for key in PRESETS:
            by_mode = data[base][key]["figures_by_memory_mode"]
            assert by_mode["fast"] != by_mode["low"] and by_mode["low"].endswith("(low memory mode)"), (base, key)
    assert figures == {key: data["flux-dev"][key]["figures_by_memory_mode"]["fast"] for key in PRESETS}
    # two photos: 90 s of loading, 2 s of encoding, 1,000 steps of 0.95 s
    assert data["flux-dev"]["balanced"]["figures_by_memory_mode"]["low"].endswith("about 17 min (low memory mode)")


@pytest.mark.django_db
def test_a_refused_launch_in_low_memory_mode_shows_the_low_estimate(alice_client, alice, make_dataset, monkeypatch):
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)
    html = alice_client.post(launch_url(make_dataset(alice, n=2)), {
        "preset": "balanced", "base_model": "flux-dev", "memory_mode": "low", "resolution": "72"}).content.decode()
    assert "multiple of 16" in html and not TrainingJob.objects.exists()
    assert shown_figures(html)["balanced"].endswith("· about 17 min (low memory mode)")
    assert 'value="low" selected' in html and "estimates above are for low memory mode" in html


@pytest.mark.django_db
def test_an_unknown_memory_mode_shows_the_fast_estimate(alice_client, alice, make_dataset):
    html = alice_client.post(launch_url(make_dataset(alice, n=1)), {
        "preset": "balanced", "base_model": "flux-dev", "memory_mode": "turbo"}).content.decode()
    assert not TrainingJob.objects.exists()
    assert shown_figures(html)["balanced"].endswith("(fast memory mode)")
