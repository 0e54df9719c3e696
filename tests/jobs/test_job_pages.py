"""What the training pages say: preset figures per base."""

from __future__ import annotations

import json
import re

import pytest
from django.conf import settings
from django.urls import reverse

from trainer import jobs
from trainer.models import TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_real_queue(monkeypatch):
    monkeypatch.setattr(jobs, "job_enqueue", lambda job: None)


def launch_url(dataset) -> str:
    return reverse("trainer:job_launch", args=[dataset.pk])


def figures(html: str, preset: str) -> str:
    return re.search(rf'id="preset-{preset}-figures">([^<]*)<', html).group(1)


def embedded_presets(html: str) -> dict:
    return json.loads(re.search(r'<script id="launch-presets" type="application/json">(.*?)</script>', html, re.S).group(1))


def test_the_launch_page_shows_the_chosen_bases_figures_and_they_are_what_runs(alice_client, alice, make_dataset):
    dataset = make_dataset(alice, n=2)
    default = alice_client.get(launch_url(dataset)).content.decode()
    assert figures(default, "fast") == embedded_presets(default)[settings.DEFAULT_BASE_MODEL]["fast"]["figures"]
    assert figures(alice_client.get(launch_url(dataset) + "?base_model=demo").content.decode(), "fast").startswith(
        "100 steps · rank 8 · lr 0.001 · 64 px · about")
    flux = alice_client.get(launch_url(dataset) + "?base_model=flux-dev").content.decode()  # without JavaScript
    assert figures(flux, "fast").startswith("500 steps · rank 8 · lr 0.001 · 1024 px · about")
    assert figures(flux, "high").startswith("2,000 steps · rank 32")
    assert 'value="flux-dev" selected' in flux

    # Every offered base's figures ride along for the script that swaps them; each is what a launch stores.
    embedded = embedded_presets(flux)
    assert list(embedded) == settings.BASE_MODELS
    for base in ("tiny", "flux-dev"):
        for preset in ("fast", "high"):
            shown = embedded[base][preset]["figures"]
            alice_client.post(launch_url(dataset), {"preset": preset, "base_model": base})
            job = TrainingJob.objects.latest("id")
            assert shown.startswith(f"{job.total_steps:,} steps · rank {job.config['lora_rank']} · "
                                    f"lr {job.config['learning_rate']:g} · {job.config['resolution']} px"), (base, preset)
    assert embedded["tiny"]["fast"]["figures"].startswith("30 steps")


def test_the_balanced_explanation_names_the_steps_its_figures_show_on_each_base(alice_client, alice, make_dataset):
    embedded = embedded_presets(alice_client.get(launch_url(make_dataset(alice, n=1))).content.decode())
    for base, presets in embedded.items():
        steps = presets["balanced"]["figures"].split(" steps")[0]
        assert f"{steps} steps at rank 16" in presets["balanced"]["explanation"], base
    assert "1,000 steps at rank 16" in embedded["flux-dev"]["balanced"]["explanation"]
    assert "200 steps at rank 16" in embedded["demo"]["balanced"]["explanation"]
