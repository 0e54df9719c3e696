"""Several resolutions (`resolution: [32, 64]`): every image trained at each, in its own bucket."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from trainer.engine import CheckpointError, ConfigError, TrainConfig, TrainResult, train
from trainer.engine.batches import BatchPlan, validation_batches
from trainer.engine.cache import build_cache
from trainer.engine.cli import parse_args
from trainer.engine.data import describe, load_dataset
from trainer.engine.tiny import build_tiny_pipeline

from .conftest import RecordingHooks, make_image, train_config


@pytest.fixture(scope="module")
def two_resolutions(tiny_base: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, RecordingHooks]:
    hooks = RecordingHooks()
    config = train_config(tiny_base, dataset, tmp_path_factory.mktemp("multi"), resolution=[64, 32, 64], steps=4,
                          val_every=2, checkpoint_every=2, sample_every=0)  # fmt: skip
    return train(config, hooks), hooks


def test_a_list_is_sorted_and_deduplicated_and_a_bad_value_is_named() -> None:
    def resolved(value: object) -> object:
        return TrainConfig.from_dict({"base": "tiny", "images_dir": "i", "output_dir": "o", "resolution": value}).resolve().resolution

    assert resolved([1024, 512, 768, 512]) == [512, 768, 1024]
    assert resolved([48, 48]) == 48  # one value is the plain setting, so it trains (and resumes) as `48` does
    assert resolved(48) == 48 and resolved(None) == 64  # None: the tiny preset's
    with pytest.raises(ConfigError, match=r"multiple of 16 .*got 72 \(in \[32, 72\]\)"):
        resolved([32, 72])
    with pytest.raises(ConfigError, match="got 0"):
        resolved([0, 64])
    with pytest.raises(ConfigError, match="empty list"):
        resolved([])
    with pytest.raises(ConfigError, match="resolution must be"):
        resolved(["512"])


def test_the_command_line_takes_a_comma_separated_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["train", "--resolution", "512, 768,1024"]).resolution == [512, 768, 1024]
    assert parse_args(["train", "--resolution", "512"]).resolution == 512
    with pytest.raises(SystemExit):
        parse_args(["train", "--resolution", "512,big"])
    assert "512 or 512,768,1024" in capsys.readouterr().err


def test_every_image_is_an_example_at_each_resolution(dataset: Path) -> None:
    examples = load_dataset(dataset, [32, 64], "zxq", False)
    assert len(examples) == 12 and [e.resolution for e in examples] == [32] * 6 + [64] * 6
    assert {e.bucket for e in examples if e.resolution == 32} == {(32, 32)}
    assert {e.bucket for e in examples if e.resolution == 64} == {(64, 64), (80, 48)}  # square and wide photos
    text = describe(examples)
    assert "6 images x 2 resolutions = 12 examples" in text
    assert "32 px: 6 examples in 1 bucket(s)" in text and "64 px: 6 examples in 2 bucket(s)" in text
    # An epoch visits every (image, resolution) once, and a batch never mixes sizes.
    plan = BatchPlan([e.bucket for e in examples], batch_size=2, seed=3)
    batches = [plan.batch(k) for k in range(plan.per_epoch)]
    assert sorted(i for batch in batches for i in batch) == list(range(12))
    assert all(len({examples[i].bucket for i in batch}) == 1 for batch in batches)


def test_latents_are_cached_per_resolution_and_captions_once(tmp_path: Path) -> None:
    for i in range(2):
        make_image(tmp_path / f"{i}.png", (64, 64), (200, 90 * i, 30))
        (tmp_path / f"{i}.txt").write_text(f"zxq number {i}")
    cpu, logs = torch.device("cpu"), []
    common = dict(max_sequence_length=32, sample_prompts=[], sample_sequence_length=32, flip=False, device=cpu,
                  offload=False)  # fmt: skip
    cache = build_cache(build_tiny_pipeline(), load_dataset(tmp_path, [32, 64], "zxq", False), log=logs.append, **common)
    assert [tuple(latent.shape) for latent in cache.latents] == [(16, 4, 4)] * 2 + [(16, 8, 8)] * 2
    assert cache.captions.text.shape[0] == 2 and cache.caption_rows == [0, 1, 0, 1]
    assert any("encoding 2 images at 32, 64 px (4 latents)" in line for line in logs)
    # The validation loss measures the largest resolution, exactly as a run at 64 alone does.
    alone = build_cache(build_tiny_pipeline(), load_dataset(tmp_path, 64, "zxq", False), log=logs.append, **common)
    for multi, single in zip(validation_batches(cache, [0.3, 0.7], 5), validation_batches(alone, [0.3, 0.7], 5), strict=True):
        assert torch.equal(multi.noisy, single.noisy) and torch.equal(multi.text, single.text)


def test_a_run_trains_at_both_resolutions(two_resolutions: tuple[TrainResult, RecordingHooks]) -> None:
    import yaml
    from PIL import Image
    from safetensors import safe_open

    result, hooks = two_resolutions
    assert any("32 px: 6 examples" in line and "64 px: 6 examples" in line for line in hooks.logs), hooks.logs
    assert any("(12 latents)" in line for line in hooks.logs)
    assert yaml.safe_load(result.config_path.read_text())["resolution"] == [32, 64]
    with safe_open(str(result.lora_path), framework="pt") as handle:
        assert handle.metadata()["flux_studio.resolution"] == "[32, 64]"
    assert [Image.open(path).size for path in result.sample_paths] == [(64, 64)]  # samples at the largest
    assert len(result.losses) == 4 and all(loss == loss for loss in result.losses)


def test_a_bad_list_fails_before_the_model_loads(
    tiny_base: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.engine.training as training

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the base model was loaded")

    monkeypatch.setattr(training, "load_pipeline", never)
    with pytest.raises(ConfigError, match=r"got 40 \(in \[32, 40\]\)"):
        train(train_config(tiny_base, dataset, tmp_path / "bad", resolution=[32, 40]))
    assert not (tmp_path / "bad").exists()


def test_resume_treats_the_list_as_one_setting(two_resolutions: tuple[TrainResult, RecordingHooks], tmp_path: Path) -> None:
    full, _ = two_resolutions
    source = full.config_path.parent / "checkpoints" / "step-000002"
    images, base = load_config_paths(full)
    for value in ([32, 48], 64):
        out = tmp_path / f"changed-{value}"
        shutil.copytree(source, out / "checkpoints" / "step-000002")
        with pytest.raises(CheckpointError, match=re.escape(f"resolution [32, 64] -> {value!r} changed")):
            train(train_config(base, images, out, resolution=value, steps=4, resume=True))
    # The same resolutions in another order resume exactly.
    out = tmp_path / "same"
    shutil.copytree(source, out / "checkpoints" / "step-000002")
    hooks = RecordingHooks()
    resumed = train(train_config(base, images, out, resolution=[64, 32], steps=4, val_every=2, resume=True,
                                 sample_prompts=[]), hooks)  # fmt: skip
    assert hooks.steps == [3, 4] and resumed.losses == full.losses and resumed.val_losses == full.val_losses


def load_config_paths(result: TrainResult) -> tuple[Path, Path]:
    import yaml

    config = yaml.safe_load(result.config_path.read_text())
    return Path(config["images_dir"]), Path(config["base"])
