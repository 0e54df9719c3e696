"""What a run checks before it computes, what a stop does before training began, what its
progress reports, and the command line's Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.engine import train
from trainer.engine.config import TrainConfig
from trainer.engine.errors import CheckpointError, ConfigError
from trainer.engine.hooks import PrintHooks

from .conftest import TRIGGER, RecordingHooks, make_image, train_config

ROOT = Path(__file__).resolve().parents[2]


def test_an_optimizer_this_machine_lacks_fails_before_the_base_loads(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    hooks = RecordingHooks()
    with pytest.raises(ConfigError, match="adamw8bit needs a CUDA GPU and the bitsandbytes package"):
        train(train_config(tiny_base, dataset, tmp_path / "out", optimizer="adamw8bit"), hooks)
    assert not any(line.startswith("loading base") for line in hooks.logs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"val_timesteps": []}, "val_timesteps is empty"),
        ({"logit_std": 0.0}, "logit_std must be positive"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
    ],
)
def test_settings_that_would_crash_later_are_refused_up_front(tmp_path: Path, overrides: dict, message: str) -> None:
    config = TrainConfig.from_dict({"base": "tiny", "images_dir": "x", "output_dir": str(tmp_path), **overrides})
    with pytest.raises(ConfigError, match=message):
        config.resolve()
    # no validation at all needs no noise levels
    assert TrainConfig.from_dict({"base": "tiny", "images_dir": "x", "output_dir": "y", "val_timesteps": [],
                                  "val_every": 0}).resolve().val_timesteps == []  # fmt: skip


def test_whole_numbers_written_as_floats_are_accepted_where_ints_go() -> None:
    config = TrainConfig.from_dict({"resolution": [512.0, 768], "steps": 300.0, "learning_rate": 1})
    assert config.resolution == [512, 768] and config.steps == 300 and isinstance(config.steps, int)
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    with pytest.raises(ConfigError, match="steps must be int"):
        TrainConfig.from_dict({"steps": 300.5})


def test_resume_onto_other_photos_or_captions_is_refused(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    shutil.copytree(dataset, images)
    out = tmp_path / "out"
    short = dict(steps=2, checkpoint_every=1, keep_checkpoints=1, val_every=0, sample_prompts=[])
    train(train_config(tiny_base, images, out, **short), RecordingHooks())

    def resume() -> None:
        train(train_config(tiny_base, images, out, **dict(short, steps=3), resume=True), RecordingHooks())

    caption = images / "img0.txt"
    original = caption.read_text()
    caption.write_text(f"a photo of {TRIGGER}, now recaptioned")
    with pytest.raises(CheckpointError, match="images or captions changed"):
        resume()
    caption.write_text(original)
    make_image(images / "extra.png", (64, 64), (10, 200, 10))
    (images / "extra.txt").write_text(f"a photo of {TRIGGER}")
    with pytest.raises(CheckpointError, match="images or captions changed"):
        resume()
    (images / "extra.png").unlink()
    (images / "extra.txt").unlink()
    hooks = RecordingHooks()
    train(train_config(tiny_base, images, out, **dict(short, steps=3), resume=True), hooks)
    assert hooks.steps == [2, 3]  # the same dataset again: it resumes from the checkpoint of step 1


class StopWhileEncoding(RecordingHooks):
    """Asks to stop once the images are being encoded, counting how often it was asked."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    def should_stop(self) -> bool:
        self.asked += 1
        return any("with the VAE" in line for line in self.logs) and self.asked > 3


def test_a_stop_while_the_dataset_encodes_ends_the_run_before_training(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    hooks = StopWhileEncoding()
    result = train(train_config(tiny_base, dataset, tmp_path / "out"), hooks)
    assert result.canceled and result.final_step == 0
    assert hooks.steps == [] and hooks.checkpoints == []  # not one step trained, nothing saved
    assert result.lora_path is None and result.checkpoint_dir is None
    assert hooks.asked < 6 + 3  # heard between images, not after encoding all six
    assert "stopped before training, at step 0 of 40" in hooks.logs


def test_a_stop_while_a_resume_loads_keeps_its_checkpoint(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    short = dict(steps=2, checkpoint_every=2, val_every=0, sample_prompts=[])
    train(train_config(tiny_base, dataset, out, **dict(short, steps=4)), RecordingHooks(stop_after=2))
    result = train(train_config(tiny_base, dataset, out, **dict(short, steps=4), resume=True), StopWhileEncoding())
    assert result.canceled and result.final_step == 2
    assert result.checkpoint_dir is not None and result.checkpoint_dir.name == "step-000002"
    assert result.lora_path is not None and result.lora_path.is_file() and len(result.losses) == 2


class LearningRates(RecordingHooks):
    def __init__(self) -> None:
        super().__init__()
        self.lrs: list[float] = []

    def on_progress(self, progress) -> None:  # type: ignore[no-untyped-def]
        super().on_progress(progress)
        self.lrs.append(progress.lr)


def test_progress_reports_the_learning_rate_each_step_trained_at(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    hooks = LearningRates()
    train(train_config(tiny_base, dataset, tmp_path / "out", steps=6, warmup_steps=4, learning_rate=1e-3,
                       val_every=0, checkpoint_every=0, sample_prompts=[]), hooks)  # fmt: skip
    # a linear warmup over 4 steps whose first step already trains, then constant (the step's
    # rate, not the next one's)
    assert hooks.lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    cosine = LearningRates()
    train(train_config(tiny_base, dataset, tmp_path / "cos", steps=5, lr_scheduler="cosine", learning_rate=1e-3,
                       val_every=0, checkpoint_every=0, sample_prompts=[]), cosine)  # fmt: skip
    assert cosine.lrs[0] == pytest.approx(1e-3) and cosine.lrs == sorted(cosine.lrs, reverse=True)
    assert 0 < cosine.lrs[-1] < 2e-4


@pytest.mark.parametrize(
    ("shape", "expected"),
    [("constant", [0.5, 1, 1, 1, 1]), ("linear", [0.5, 1, 1, 2 / 3, 1 / 3]), ("cosine", [0.5, 1, 1, 0.75, 0.25])],
)
def test_every_warmup_step_trains_and_the_decay_follows_it(shape: str, expected: list[float]) -> None:
    """A warmup of 2 on a 5-step run: half rate, then full; the decay runs over the 3 steps after."""
    from trainer.engine.optimizers import make_scheduler

    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    config = TrainConfig(images_dir="unused", trigger_word="zxq", steps=5, warmup_steps=2, lr_scheduler=shape)
    scheduler = make_scheduler(optimizer, config)
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx(expected)


def test_resuming_a_finished_run_or_stretching_its_schedule_is_explained(tmp_path: Path) -> None:
    """A finished run keeps no checkpoint at its last step: resuming it retrains the steps after its
    last checkpoint, and says so (and points to init_lora); a decaying rate spans the new steps."""
    from safetensors.torch import save_file

    from trainer.engine.training import _explain_resume

    save_file({"w": torch.zeros(1)}, str(tmp_path / "lora.safetensors"), metadata={"flux_studio.steps": "5"})
    config = TrainConfig(images_dir="i", output_dir=str(tmp_path), trigger_word="zxq", steps=8, lr_scheduler="cosine")
    hooks = RecordingHooks()
    _explain_resume(config, {"config": {"steps": 5}}, 4, tmp_path, hooks)
    assert any("already finished at step 5" in m and "step 5 trains again" in m and "init_lora" in m
               for m in hooks.logs), hooks.logs  # fmt: skip
    assert any("cosine learning-rate schedule now spans 8 steps instead of 5" in m for m in hooks.logs)
    quiet = RecordingHooks()  # a plain resume of an unfinished run at a constant rate: nothing to explain
    _explain_resume(TrainConfig(images_dir="i", output_dir="o", steps=8), {"config": {"steps": 5}}, 4, tmp_path / "x", quiet)
    assert quiet.logs == []


def test_resume_of_a_run_that_finished_without_checkpoints_points_to_init_lora(
    tiny_base: Path, dataset: Path, tmp_path: Path
) -> None:
    common = dict(val_every=0, sample_prompts=[], checkpoint_every=0)
    train(train_config(tiny_base, dataset, tmp_path / "out", steps=2, **common))
    hooks = RecordingHooks()
    train(train_config(tiny_base, dataset, tmp_path / "out", steps=3, resume=True, **common), hooks)
    assert any("no checkpoint: starting from step 0. Its run finished at step 2 before writing one" in line
               and "init_lora" in line for line in hooks.logs), hooks.logs


def test_the_first_ctrl_c_asks_for_a_stop_and_the_second_quits(capsys) -> None:
    hooks = PrintHooks()
    assert not hooks.should_stop()
    hooks.interrupt(signal.SIGINT, None)
    assert hooks.should_stop()
    assert "stopping after this step" in capsys.readouterr().out
    with pytest.raises(KeyboardInterrupt):
        hooks.interrupt(signal.SIGINT, None)


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_leaves_a_checkpoint_to_resume_from(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "trainer.engine", "train", "--base", str(tiny_base), "--images", str(dataset),
               "--trigger", TRIGGER, "--steps", "100000", "--out", str(out), "--rank", "2", "--device", "cpu"]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert process.stdout is not None
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("step "):  # training is under way
                process.send_signal(signal.SIGINT)
                break
        rest, _ = process.communicate(timeout=120)
    finally:  # a 100000-step run must not outlive a failed check
        if process.poll() is None:
            process.kill()
    output = "".join(lines) + rest
    assert process.returncode == 0, output
    assert "canceled at step" in output
    saved = sorted((out / "checkpoints").glob("step-*"))
    assert saved and (saved[-1] / "lora.safetensors").is_file()


def _oom_once_without_checkpointing(monkeypatch, at_call: int) -> list[bool]:
    """Make the transformer's memory run out once, at the `at_call`th training forward, unless
    gradient checkpointing is on: what a GPU too small for fast mode does (simulated: the CPU has
    no such limit). Returns, per forward, whether checkpointing was on."""
    from trainer.engine import training

    real, seen = training.loss_of, []

    def loss_of(transformer, batch, guidance):  # type: ignore[no-untyped-def]
        seen.append(bool(transformer.gradient_checkpointing))
        if len(seen) == at_call and not transformer.gradient_checkpointing:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(transformer, batch, guidance)

    monkeypatch.setattr(training, "loss_of", loss_of)
    return seen


def test_fast_mode_turns_checkpointing_on_when_memory_runs_out_and_trains_the_same(
    tiny_base: Path, dataset: Path, tmp_path: Path, monkeypatch
) -> None:
    settings = dict(steps=5, val_every=0, checkpoint_every=4, sample_prompts=[])
    plain = train(train_config(tiny_base, dataset, tmp_path / "plain", **settings), RecordingHooks())
    seen = _oom_once_without_checkpointing(monkeypatch, at_call=3)
    hooks = RecordingHooks()
    result = train(train_config(tiny_base, dataset, tmp_path / "oom", **settings), hooks)
    assert hooks.steps == [1, 2, 3, 4, 5] and not result.canceled
    assert seen == [False, False, False, True, True, True]  # step 3 failed, then ran again checkpointed
    assert any("out of memory at step 3: gradient checkpointing is now on" in line for line in hooks.logs)
    assert result.losses == pytest.approx(plain.losses, rel=1e-5)  # the same steps, recomputed
    saved = torch.load(result.checkpoint_dir / "state.pt", weights_only=False)  # type: ignore[operator]
    assert saved["config"]["gradient_checkpointing"] is True


def test_running_out_of_memory_with_checkpointing_on_says_what_to_change(tiny_base: Path, dataset: Path, tmp_path: Path, monkeypatch) -> None:
    from trainer.engine import training
    from trainer.engine.errors import OutOfMemoryError

    def loss_of(transformer, batch, guidance):  # type: ignore[no-untyped-def]
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(training, "loss_of", loss_of)
    with pytest.raises(OutOfMemoryError, match="memory_mode 'low'"):
        train(train_config(tiny_base, dataset, tmp_path / "out", steps=3, val_every=0, sample_prompts=[],
                           gradient_checkpointing=True), RecordingHooks())  # fmt: skip


def test_memory_running_out_in_the_update_is_not_retried(tiny_base: Path, dataset: Path, tmp_path: Path, monkeypatch) -> None:
    """Past the backward part of the update may be applied: re-running the step would apply it twice."""
    from trainer.engine.errors import OutOfMemoryError

    def clip(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    hooks = RecordingHooks()
    with pytest.raises(OutOfMemoryError, match="out of memory"):
        train(train_config(tiny_base, dataset, tmp_path / "out", steps=3, val_every=0, sample_prompts=[]), hooks)
    assert not any("gradient checkpointing is now on" in line for line in hooks.logs)


def test_a_checkpoint_holding_code_is_refused_not_run(tmp_path: Path) -> None:
    """Checkpoints come back from storage: loading one runs no pickled code, it says it cannot read it."""
    from trainer.engine.checkpoint import STATE_FILE, load_checkpoint

    folder = tmp_path / "step-000004"
    folder.mkdir()
    torch.save({"step": 4, "config": {}, "hook": os.system}, folder / STATE_FILE)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(folder, {})
