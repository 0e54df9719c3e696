"""A training's own data: the photos and captions exactly as it trained on them, as a zip beside
which its config.yaml runs unchanged in the engine's command line (the README's recipe).

The studio puts the trigger word into captions that lack it when it freezes a training's photos;
the dataset's own export keeps the captions as written, so only this zip reproduces the run.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from django.test import Client
from django.urls import reverse

from tests.api.conftest import body_of
from trainer import jobs
from trainer.datasets import has_word
from trainer.models import CaptionSource, JobState
from trainer.training_run import run_training

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def contents(zipped: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_config_and_training_data_rerun_the_training_in_the_engine(alice, bob, alice_api, bob_api, make_dataset, no_queue,
                                                                   tmp_path, monkeypatch, settings):
    from trainer.engine.cli import main

    dataset = make_dataset(alice, n=3, trigger="zxq")
    first, second, third = dataset.photos.order_by("id")
    # Captions the engine alone would refuse: no trigger word, the trigger only inside another word, none at all.
    first.caption = "a cat on a mat"
    second.caption = "the zxqs family portrait"
    third.caption, third.caption_source = "", CaptionSource.NONE
    for photo in (first, second, third):
        photo.save()
    job = jobs.job_create(owner=alice, dataset=dataset, preset="fast", base_model="tiny", overrides={"steps": 2})
    run_training(job.pk)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.error

    training = alice_api.get(f"/api/v1/trainings/{job.pk}").json()
    # The job's log speaks of its own files, never of the worker's folders.
    assert any(line.startswith("saved out/lora.safetensors") for line in training["logs"].splitlines()), training["logs"]
    assert str(settings.DATA_DIR) not in training["logs"]
    # and says which captions the studio wrote
    assert '1 of 3 photos have no caption: they train as "a photo of zxq".' in training["logs"]
    assert '2 of 3 captions lack the trigger word: they train with "zxq, " in front.' in training["logs"]
    assert bob_api.get(training["urls"]["training_data"]).status_code == 404

    data = body_of(alice_api.get(training["urls"]["training_data"]))
    # The training's page offers the same zip to its owner alone.
    page = Client()
    page.force_login(alice)
    assert b'id="download-data"' in page.get(job.get_absolute_url()).content
    from_page_response = page.get(reverse("trainer:job_download", args=[job.pk, "data"]))
    assert from_page_response["Cache-Control"] == "private, max-age=300"
    from_page = b"".join(from_page_response.streaming_content)
    assert contents(from_page) == contents(data)
    page.force_login(bob)
    assert page.get(reverse("trainer:job_download", args=[job.pk, "data"])).status_code == 404
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(tmp_path)
    captions = [path.read_text() for path in sorted((tmp_path / "dataset").glob("*.txt"))]
    assert captions == ["zxq, a cat on a mat", "zxq, the zxqs family portrait", "a photo of zxq"]
    assert all(has_word(caption, "zxq") for caption in captions)
    assert len(list((tmp_path / "dataset").glob("*.png"))) == 3
    (tmp_path / "config.yaml").write_bytes(body_of(alice_api.get(training["output"]["config"])))

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "config.yaml", "--steps", "1"]) == 0
    assert (tmp_path / "out" / "lora.safetensors").is_file()
