"""The README's complete API script, run as written against a live studio (daphne + a GPU worker).

It uploads a zip, trains on the default base while it watches the training's event stream,
downloads the LoRA, and generates two images with it. If the README's script or the API it
shows drifts apart, this fails.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.browser.conftest import LiveStudio
from tests.conftest import ROOT, make_image_bytes

pytestmark = pytest.mark.slow


def readme_script() -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"A complete script \(train, wait, generate\).*?```python\n(.*?)```", readme, re.S)
    assert found, "the README's complete script is missing"
    return found.group(1)


def test_the_readmes_api_script_runs(transactional_db, alice, tmp_path: Path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from flux_studio.api.tokens import token_create
    from flux_studio.api.uploads import ingest_uploads
    from flux_studio.api.views_files import API_DATASET_NAME
    from trainer.datasets import dataset_create
    from trainer.models import TrainingJob

    # A photo from an earlier upload, where uploads without a `dataset` field gather: the script's
    # training must not take it in.
    earlier = dataset_create(owner=alice, name=API_DATASET_NAME)
    (cat,), _ = ingest_uploads(earlier, [SimpleUploadedFile("cat.png", make_image_bytes(300, 300, color=(9, 9, 200)))])

    photos = io.BytesIO()
    with zipfile.ZipFile(photos, "w") as archive:
        for i in range(3):
            archive.writestr(f"p{i}.png", make_image_bytes(300, 300, color=(60 * i, 90, 30), pattern=i))
    (tmp_path / "photos.zip").write_bytes(photos.getvalue())
    (tmp_path / "script.py").write_text(readme_script())
    token = token_create(owner=alice, name="readme script")[1]
    studio = LiveStudio(tmp_path).start()
    try:
        run = subprocess.run(
            [sys.executable, "script.py", "photos.zip"], cwd=tmp_path, capture_output=True, text=True, timeout=420,
            env={**os.environ, "FLUX_STUDIO_URL": studio.url, "FLUX_STUDIO_TOKEN": token},
        )
    finally:
        studio.stop()
    assert run.returncode == 0, run.stdout + run.stderr + studio.output()
    out = run.stdout
    assert "3 photos uploaded" in out
    trained_on = TrainingJob.objects.get(owner=alice).snapshot
    assert len(trained_on) == 3 and cat.image.name not in {row["image"] for row in trained_on}, trained_on
    assert re.search(r"^step 12/12 loss \d", out, re.M), out  # from the live event stream
    assert re.search(r"^state training$", out, re.M) and re.search(r"^state succeeded$", out, re.M), out
    assert (tmp_path / "zxq_lora.safetensors").stat().st_size > 1000
    for index in (0, 1):
        assert (tmp_path / f"zxq_{index}.png").read_bytes()[:4] == b"\x89PNG"
    assert "succeeded" in out.splitlines()[-1]
