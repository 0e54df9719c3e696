"""Training on the tiny base: it learns, resumes exactly, and stops when told to."""

import re
import shutil
from pathlib import Path

import pytest

from trainer.engine import CheckpointError, OutOfMemoryError, TrainResult, train
from trainer.engine.errors import ConfigError
from trainer.engine.checkpoint import check_resumable

from .conftest import RecordingHooks, train_config


def test_validation_loss_falls_clearly(trained: tuple[TrainResult, RecordingHooks]) -> None:
    result, hooks = trained
    steps = [step for step, _ in result.val_losses]
    assert steps == [0, 10, 20, 30, 40]
    first, last = result.val_losses[0][1], result.val_losses[-1][1]
    assert last < 0.85 * first, result.val_losses
    assert hooks.steps == list(range(1, 41))  # on_progress every step
    assert len(result.losses) == 40 and result.final_step == 40 and not result.canceled


def test_a_run_writes_its_files(trained: tuple[TrainResult, RecordingHooks]) -> None:
    result, hooks = trained
    out = result.config_path.parent
    assert result.lora_path == out / "lora.safetensors" and result.lora_path.is_file()
    assert result.kohya_path == out / "lora_kohya.safetensors" and result.kohya_path.is_file()
    assert (out / "config.yaml").is_file()
    assert [step for step, _ in hooks.samples] == [20, 40]
    assert all(path.is_file() and path.parent == out / "samples" for path in result.sample_paths)
    assert [step for step, _ in hooks.checkpoints] == [20]


def test_resume_reproduces_the_uninterrupted_losses(trained: tuple[TrainResult, RecordingHooks], tmp_path: Path) -> None:
    """A job killed after step 20 resumes at 21 and computes exactly what the full run did."""
    full, _ = trained
    out = tmp_path / "resumed"
    source = full.config_path.parent / "checkpoints" / "step-000020"
    shutil.copytree(source, out / "checkpoints" / "step-000020")
    config = train_config(_base(full), _images(full), out, resume=True, sample_prompts=[])
    hooks = RecordingHooks()
    resumed = train(config, hooks)
    assert hooks.steps[0] == 21 and resumed.final_step == 40
    assert resumed.losses == full.losses  # exact on the CPU, first 20 from the checkpoint
    assert resumed.val_losses == full.val_losses


@pytest.mark.parametrize(
    ("setting", "value"),
    [("learning_rate", 1e-3), ("lr_scheduler", "cosine"), ("warmup_steps", 5), ("optimizer", "adafactor"),
     ("timestep_sampling", "sigmoid"), ("caption_dropout", 0.0), ("flip", False), ("lora_rank", 8),
     ("lora_alpha", 2.0), ("lora_targets", "attention"), ("resolution", 32), ("batch_size", 2), ("seed", 7),
     ("grad_accum", 2), ("max_sequence_length", 16), ("guidance", 3.0), ("pad_captions", True)],
)  # fmt: skip
def test_resume_refuses_a_changed_setting_by_name(
    trained: tuple[TrainResult, RecordingHooks], tmp_path: Path, setting: str, value: object
) -> None:
    """Any setting that decides what a step computes must match, or the 'resumed' losses are another run's."""
    full, _ = trained
    out = tmp_path / "changed"
    shutil.copytree(full.config_path.parent / "checkpoints" / "step-000020", out / "checkpoints" / "step-000020")
    config = train_config(_base(full), _images(full), out, resume=True, **{setting: value})
    named = rf"cannot resume from step-000020: (.*, )?{setting} \S+ -> {re.escape(repr(value))}(,| changed)"
    with pytest.raises(CheckpointError, match=named):
        train(config)


def test_resume_allows_more_steps_and_other_memory_settings_but_not_fewer_steps(
    trained: tuple[TrainResult, RecordingHooks],
) -> None:
    full, _ = trained
    saved = train_config(_base(full), _images(full), Path("a"), resume=True).resolve().to_dict()
    moved = dict(saved, steps=400, output_dir="elsewhere", images_dir="copy", device="auto", memory_mode="low",
                 gradient_checkpointing=True, compile=True, cuda_graphs=True, sample_prompts=[], sample_every=5, checkpoint_every=5, val_every=0)  # fmt: skip
    check_resumable("step-000020", saved, moved, step=20)  # no error
    with pytest.raises(CheckpointError, match="at step 20, beyond steps=10"):
        check_resumable("step-000020", saved, dict(saved, steps=10), step=20)


def test_a_resume_keeps_the_optimizer_its_checkpoint_was_made_with(
    trained: tuple[TrainResult, RecordingHooks], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`optimizer: auto` follows the memory mode, which a resume may change; the saved state is
    one optimizer's, so the resumed run keeps that optimizer."""
    import torch

    from trainer.engine import optimizers, training

    full, _ = trained
    out = tmp_path / "resumed"
    shutil.copytree(full.config_path.parent / "checkpoints" / "step-000020", out / "checkpoints" / "step-000020")
    assert torch.load(out / "checkpoints" / "step-000020" / "state.pt", weights_only=False)["optimizer_name"] == "adamw"
    # as on a CUDA box resumed in low memory mode: auto would now pick 8-bit AdamW
    monkeypatch.setattr(training, "optimizer_name", lambda cfg, device: "adamw8bit")  # the check in train()
    monkeypatch.setattr(optimizers, "optimizer_name", lambda cfg, device: "adamw8bit")  # make_optimizer's choice
    hooks = RecordingHooks()
    resumed = train(train_config(_base(full), _images(full), out, resume=True, steps=22, sample_prompts=[], val_every=0), hooks)
    assert any(line.startswith("optimizer adamw,") for line in hooks.logs)
    assert resumed.losses == full.losses[:22]


def test_cancel_stops_within_a_step_and_leaves_a_usable_checkpoint(
    trained: tuple[TrainResult, RecordingHooks], tmp_path: Path
) -> None:
    full, _ = trained
    hooks = RecordingHooks(stop_after=5)
    config = train_config(_base(full), _images(full), tmp_path / "canceled", sample_prompts=[], val_every=0)
    result = train(config, hooks)
    assert result.canceled and result.final_step == 5 and hooks.steps == [1, 2, 3, 4, 5]
    assert result.checkpoint_dir is not None and result.checkpoint_dir.name == "step-000005"
    assert result.lora_path == result.checkpoint_dir / "lora.safetensors" and result.lora_path.is_file()
    assert result.losses == full.losses[:5]
    # The checkpoint resumes: two more steps continue from 6 with the full run's losses.
    more = RecordingHooks()
    resumed = train(train_config(_base(full), _images(full), tmp_path / "canceled", sample_prompts=[], val_every=0,
                                 resume=True, steps=7), more)  # fmt: skip
    assert more.steps == [6, 7]
    assert resumed.losses == full.losses[:7]


def test_continue_training_starts_from_the_saved_function(
    trained: tuple[TrainResult, RecordingHooks], tmp_path: Path
) -> None:
    """init_lora: the first validation loss equals the one the saved LoRA ended with."""
    full, _ = trained
    hooks = RecordingHooks()
    config = train_config(_base(full), _images(full), tmp_path / "more", init_lora=str(full.lora_path), steps=1,
                          sample_prompts=[], lora_rank=8, lora_alpha=2.0)  # fmt: skip
    result = train(config, hooks)
    assert any("rank 4" in line for line in hooks.logs)  # the file's rank wins, and says so
    assert result.val_losses[0][1] == pytest.approx(full.val_losses[-1][1], rel=1e-5)


def test_continue_training_honours_the_files_alpha_tensors(
    trained: tuple[TrainResult, RecordingHooks], tmp_path: Path
) -> None:
    """A file that keeps `<module>.alpha` apart (lora_B unscaled, alpha = 2 × rank: the same function
    as our folded file) continues from that function, as diffusers' load_lora_weights reads it."""
    import torch
    from safetensors.torch import load_file, save_file

    full, _ = trained
    folded = load_file(str(full.lora_path))
    rank = next(v.shape[0] for k, v in folded.items() if ".lora_A." in k)
    apart = {k: (v / 2 if ".lora_B." in k else v) for k, v in folded.items()}
    apart.update({k.replace(".lora_A.weight", ".alpha"): torch.tensor(2.0 * rank) for k in folded if ".lora_A." in k})
    save_file(apart, str(tmp_path / "apart.safetensors"))
    config = train_config(_base(full), _images(full), tmp_path / "more", init_lora=str(tmp_path / "apart.safetensors"),
                          steps=1, sample_prompts=[])  # fmt: skip
    result = train(config)
    assert result.val_losses[0][1] == pytest.approx(full.val_losses[-1][1], rel=1e-5)


def test_continue_training_keeps_every_layer_the_file_adapts(
    trained: tuple[TrainResult, RecordingHooks], tmp_path: Path
) -> None:
    """An attention-only run on a full LoRA widens to the full set (nothing the file learned is
    dropped); a file that adapts a layer the engine does not train is refused before any loading."""
    import torch
    from safetensors.torch import load_file, save_file

    full, _ = trained
    hooks = RecordingHooks()
    config = train_config(_base(full), _images(full), tmp_path / "more", init_lora=str(full.lora_path), steps=1,
                          sample_prompts=[], lora_targets="attention")  # fmt: skip
    result = train(config, hooks)
    assert any("training lora_targets full instead of attention" in line for line in hooks.logs), hooks.logs
    assert result.val_losses[0][1] == pytest.approx(full.val_losses[-1][1], rel=1e-5)

    state = load_file(str(full.lora_path))
    rank = next(v.shape[0] for k, v in state.items() if ".lora_A." in k)
    state["transformer.transformer_blocks.0.norm1.linear.lora_A.weight"] = torch.zeros(rank, 8)
    state["transformer.transformer_blocks.0.norm1.linear.lora_B.weight"] = torch.zeros(8, rank)
    save_file(state, str(tmp_path / "norms.safetensors"))
    hooks = RecordingHooks()
    config = train_config(_base(full), _images(full), tmp_path / "norms", init_lora=str(tmp_path / "norms.safetensors"),
                          steps=1, sample_prompts=[])  # fmt: skip
    with pytest.raises(ConfigError, match=r"init_lora adapts layers this engine does not train, e\.g\. "
                                          r"transformer_blocks\.0\.norm1\.linear"):
        train(config, hooks)
    assert not any("loading base" in line for line in hooks.logs)

    # A LoRA that also adapts the text encoder: those adapters would be dropped without a word
    state = load_file(str(full.lora_path))
    state["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight"] = torch.zeros(rank, 32)
    state["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"] = torch.zeros(32, rank)
    save_file(state, str(tmp_path / "with_te.safetensors"))
    config = train_config(_base(full), _images(full), tmp_path / "te", init_lora=str(tmp_path / "with_te.safetensors"),
                          steps=1, sample_prompts=[])  # fmt: skip
    with pytest.raises(ConfigError, match=r"e\.g\. text_encoder\..*nor the text encoders"):
        train(config)


def test_a_base_without_guidance_embedding_warns_and_labels_its_lora_schnell(dataset: Path, tmp_path: Path) -> None:
    """FLUX.1-schnell's kind (no guidance embedding): the run warns that training it weakens its
    4-step sampling, and the kohya file says which architecture it is for."""
    import json

    from safetensors import safe_open

    from trainer.engine import save_tiny_pipeline

    base = save_tiny_pipeline(tmp_path / "schnell-like")
    settings = json.loads((base / "transformer" / "config.json").read_text())
    (base / "transformer" / "config.json").write_text(json.dumps({**settings, "guidance_embeds": False}))
    hooks = RecordingHooks()
    result = train(train_config(base, dataset, tmp_path / "out", steps=2, sample_prompts=[], val_every=0,
                                checkpoint_every=0), hooks)  # fmt: skip
    assert any("no guidance embedding" in line and "FLUX.1-dev is the usual base" in line for line in hooks.logs)
    with safe_open(str(result.kohya_path), framework="pt") as handle:
        assert (handle.metadata() or {})["modelspec.architecture"] == "flux-1-schnell/lora"


def _base(result: TrainResult) -> Path:
    import yaml

    return Path(yaml.safe_load(result.config_path.read_text())["base"])


def _images(result: TrainResult) -> Path:
    import yaml

    return Path(yaml.safe_load(result.config_path.read_text())["images_dir"])


def test_low_memory_mode_computes_the_same_losses(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    """Gradient checkpointing (low memory) recomputes activations; the numbers must not move.

    Also covers batches of two from mixed buckets and gradient accumulation.
    """
    common = dict(steps=2, batch_size=2, grad_accum=2, sample_prompts=[], val_every=0, checkpoint_every=0)
    fast = train(train_config(tiny_base, dataset, tmp_path / "fast", **common))
    low_hooks = RecordingHooks()
    low = train(train_config(tiny_base, dataset, tmp_path / "low", memory_mode="low", **common), low_hooks)
    assert low.losses == pytest.approx(fast.losses, rel=1e-5)
    assert any("low memory" in line for line in low_hooks.logs)


def test_other_optimizer_schedule_sampling_and_targets_run(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    """The less common switches: Adafactor, cosine with warmup, uniform noise levels, attention only,
    captions padded to the full T5 length."""
    from safetensors.torch import load_file

    config = train_config(tiny_base, dataset, tmp_path / "other", steps=3, optimizer="adafactor", lr_scheduler="cosine",
                          warmup_steps=1, timestep_sampling="uniform", lora_targets="attention", sample_prompts=[],
                          val_every=0, checkpoint_every=0, pad_captions=True)  # fmt: skip
    hooks = RecordingHooks()
    result = train(config, hooks)
    assert any("T5 tokens (padded, as inference pads)" in line for line in hooks.logs), hooks.logs
    assert len(result.losses) == 3 and all(loss == loss for loss in result.losses)  # no NaN
    keys = load_file(str(result.lora_path)).keys()
    assert not any(".ff." in key or "proj_mlp" in key for key in keys)
    assert "lora_unet_single_blocks_0_linear1.lora_up.weight" in load_file(str(result.kohya_path))


def test_out_of_memory_becomes_the_engines_error_with_advice(
    tiny_base: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CUDA OOM in a step (injected: no GPU here) reaches the caller as OutOfMemoryError that says what to change."""
    import torch

    import trainer.engine.training as training

    def out_of_memory(*args: object, **kwargs: object) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(training, "loss_of", out_of_memory)
    common = dict(steps=2, sample_prompts=[], val_every=0, checkpoint_every=0)
    with pytest.raises(OutOfMemoryError, match=r"out of memory on cpu\. Try memory_mode 'low'") as fast:
        train(train_config(tiny_base, dataset, tmp_path / "fast", **common))
    assert isinstance(fast.value.__cause__, torch.cuda.OutOfMemoryError)
    with pytest.raises(OutOfMemoryError) as low:
        train(train_config(tiny_base, dataset, tmp_path / "low", memory_mode="low", batch_size=2, **common))
    message = str(low.value)
    assert "memory_mode" not in message  # already low: the advice moves on to the next lever
    assert "batch_size 1 with grad_accum 2" in message and "smaller resolution than 64" in message


def test_low_memory_with_a_4bit_base_loads_the_transformer_only_after_encoding(
    tiny_base: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CUDA with bitsandbytes the low memory mode never holds T5, CLIP and the transformer at once.

    No GPU here, so quantization is reported available and the 'quantized' loader is the plain one
    (same weights): what is checked is the order of the stages and that training is unchanged.
    """
    import trainer.engine.training as training

    events: list[tuple[str, bool]] = []
    real_pipeline, real_cache, real_transformer = training.load_pipeline, training.build_cache, training.load_transformer

    def load_pipeline(*args: object, **kwargs: object) -> object:
        pipeline = real_pipeline(*args, **kwargs)
        events.append(("pipeline without transformer", pipeline.transformer is None))
        return pipeline

    def build_cache(pipeline: object, *args: object, **kwargs: object) -> object:
        cache = real_cache(pipeline, *args, **kwargs)
        events.append(("encoders dropped", pipeline.text_encoder is None and pipeline.text_encoder_2 is None))
        return cache

    def load_transformer(base: str, device: object, dtype: object, *, quantize: bool) -> object:
        events.append(("transformer loaded in 4-bit", quantize))
        return real_transformer(base, device, dtype)

    common = dict(steps=2, optimizer="adamw", sample_prompts=[], val_every=0, checkpoint_every=0)
    plain = train(train_config(tiny_base, dataset, tmp_path / "plain", memory_mode="low", **common))
    monkeypatch.setattr(training, "can_quantize", lambda device: True)
    for name, fake in (("load_pipeline", load_pipeline), ("build_cache", build_cache), ("load_transformer", load_transformer)):
        monkeypatch.setattr(training, name, fake)
    staged = train(train_config(tiny_base, dataset, tmp_path / "staged", memory_mode="low", **common))
    assert events == [("pipeline without transformer", True), ("encoders dropped", True), ("transformer loaded in 4-bit", True)]
    assert staged.losses == plain.losses
