"""Shared fixtures: one tiny base saved to disk, one small dataset, one short training run.

Built once per session because even tiny models cost seconds on two CPU cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from trainer.engine import TrainConfig, TrainHooks, TrainResult

TRIGGER = "zxq"
COLOURS = [(220, 40, 40), (40, 180, 60), (40, 60, 220), (230, 200, 40), (150, 50, 200), (30, 190, 200)]


def make_image(path: Path, size: tuple[int, int], colour: tuple[int, int, int], exif_orientation: int | None = None) -> None:
    image = Image.new("RGB", size, colour)
    draw = ImageDraw.Draw(image)
    draw.ellipse((size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4), fill=(250, 250, 250))
    if exif_orientation is None:
        image.save(path)
        return
    exif = Image.Exif()
    exif[0x0112] = exif_orientation
    image.save(path, exif=exif)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset saved as a diffusers folder, used as a local-folder base."""
    from trainer.engine import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small images of two shapes (square and wide), each with a caption naming the trigger."""
    folder = tmp_path_factory.mktemp("images")
    for i, colour in enumerate(COLOURS):
        size = (64, 64) if i % 2 == 0 else (96, 56)
        make_image(folder / f"img{i}.png", size, colour)
        (folder / f"img{i}.txt").write_text(f"a photo of {TRIGGER} on colour {i}")
    return folder


def train_config(base: Path, images: Path, out: Path, **overrides: object) -> TrainConfig:
    """A run that takes a few seconds on the tiny base and still learns visibly."""
    values: dict[str, object] = dict(
        base=str(base), images_dir=str(images), output_dir=str(out), trigger_word=TRIGGER, steps=40,
        learning_rate=4e-3, lora_rank=4, val_every=10, checkpoint_every=20, sample_every=20,
        sample_prompts=[f"a photo of {TRIGGER}"], device="cpu", caption_dropout=0.1, flip=True,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig.from_dict(values)


class RecordingHooks(TrainHooks):
    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.steps: list[int] = []
        self.logs: list[str] = []
        self.samples: list[tuple[int, Path]] = []
        self.checkpoints: list[tuple[int, Path]] = []

    def on_log(self, message: str) -> None:
        self.logs.append(message)

    def on_progress(self, progress) -> None:  # type: ignore[no-untyped-def]
        self.steps.append(progress.step)

    def on_sample(self, step: int, prompt: str, path: Path) -> None:
        self.samples.append((step, path))

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append((step, path))

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.steps) >= self.stop_after


@pytest.fixture(scope="session")
def trained(tiny_base: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, RecordingHooks]:
    from trainer.engine import train

    hooks = RecordingHooks()
    result = train(train_config(tiny_base, dataset, tmp_path_factory.mktemp("run")), hooks)
    return result, hooks
