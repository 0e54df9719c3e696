"""ema_decay: the saved LoRA is the moving average of the adapter's weights; training is unchanged,
and a resume continues the average exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.engine import train
from trainer.engine.ema import AdapterEMA

from .conftest import RecordingHooks, train_config


def test_the_average_follows_the_weights_with_a_warming_decay_and_is_applied_only_inside() -> None:
    weight = torch.nn.Parameter(torch.zeros(3))
    ema = AdapterEMA([weight], decay=0.9)
    expected = torch.zeros(3)
    for target in (1.0, 2.0, 4.0):
        with torch.no_grad():
            weight.fill_(target)
        decay = ema.current_decay()  # 1/10, 2/11, 3/12: warming up towards 0.9
        ema.update()
        expected = expected + (1 - decay) * (torch.full((3,), target) - expected)
    assert torch.allclose(ema.average[0], expected)
    with ema.applied():
        assert torch.allclose(weight.detach(), expected)
    assert torch.equal(weight.detach(), torch.full((3,), 4.0)), "the trained weights come back"
    restored = AdapterEMA([torch.nn.Parameter(torch.zeros(3))], decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 3 and torch.equal(restored.average[0], ema.average[0])


def test_the_saved_lora_is_the_average_and_a_resume_continues_it_exactly(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    common = dict(steps=6, checkpoint_every=3, val_every=0, sample_prompts=[], learning_rate=1e-3)
    plain = train(train_config(tiny_base, dataset, tmp_path / "plain", **common))
    hooks = RecordingHooks()
    averaged = train(train_config(tiny_base, dataset, tmp_path / "ema", ema_decay=0.9, **common), hooks)
    assert averaged.losses == plain.losses, "the average changes what is saved, not what is trained"
    assert any("moving average (decay 0.9)" in line for line in hooks.logs)
    saved, last = load_file(str(averaged.lora_path)), load_file(str(plain.lora_path))
    assert saved.keys() == last.keys()
    assert any(not torch.allclose(saved[k], last[k]) for k in saved), "the average, not the last step's weights"
    assert any(saved[k].abs().max() > 0 for k in saved if ".lora_B." in k), "nor the first (lora_B starts at 0)"

    # A resume from step 3 carries the average on: the same file as the uninterrupted run.
    out = tmp_path / "resumed"
    shutil.copytree(tmp_path / "ema" / "checkpoints" / "step-000003", out / "checkpoints" / "step-000003")
    resumed = train(train_config(tiny_base, dataset, out, ema_decay=0.9, resume=True, **common))
    again = load_file(str(resumed.lora_path))
    assert all(torch.equal(again[k], saved[k]) for k in saved)
    # A checkpoint's loadable LoRA is the average at that step too, not the trained weights.
    at_3 = load_file(str(tmp_path / "ema" / "checkpoints" / "step-000003" / "lora.safetensors"))
    plain_at_3 = load_file(str(tmp_path / "plain" / "checkpoints" / "step-000003" / "lora.safetensors"))
    assert any(not torch.allclose(at_3[k], plain_at_3[k]) for k in at_3)


def test_a_decay_of_one_is_refused() -> None:
    from trainer.engine.config import TrainConfig
    from trainer.engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ema_decay must be in \[0, 1\)"):
        TrainConfig(base="tiny", images_dir="i", output_dir="o", ema_decay=1.0).resolve()


def test_the_command_line_takes_the_decay() -> None:
    from trainer.engine.cli import parse_args

    assert parse_args(["train", "--ema-decay", "0.99"]).ema_decay == 0.99
