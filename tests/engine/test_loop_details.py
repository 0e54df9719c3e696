"""What the training loop does with each setting: clipping, caption dropout, flips, guidance,
checkpoint pruning, LoRA targets; and how odd image modes are loaded.

Each run here is a few steps on the tiny base (about a second each on a CPU). Observation is by
wrapping calls (the transformer's forward, the optimizer's step), never by faking model output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps
from safetensors import safe_open
from torch.optim.optimizer import register_optimizer_step_pre_hook

from trainer.engine import TrainResult, train
from trainer.engine.data import load_dataset, load_image
from trainer.engine.errors import ConfigError

from .conftest import TRIGGER, RecordingHooks, train_config


def _quick(base: Path, images: Path, out: Path, **overrides: object):  # type: ignore[no-untyped-def]
    """A run of a few steps with no side jobs (no validation, samples or checkpoints) unless asked."""
    values: dict[str, object] = dict(steps=3, val_every=0, sample_prompts=[], checkpoint_every=0)
    values.update(overrides)
    return train_config(base, images, out, **values)


class ForwardCalls:
    """Records the keyword arguments of every FluxTransformer2DModel call made while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from diffusers import FluxTransformer2DModel

        self.calls: list[dict[str, Any]] = []
        original = FluxTransformer2DModel.forward

        def forward(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
            seen = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
            self.calls.append({**seen, "grad": torch.is_grad_enabled()})
            return original(model, *args, **kwargs)

        monkeypatch.setattr(FluxTransformer2DModel, "forward", forward)

    @property
    def training(self) -> list[dict[str, Any]]:
        """Calls of training steps (validation and samples run without gradients)."""
        return [call for call in self.calls if call["grad"]]


# --- 1. gradient clipping --------------------------------------------------------------------------


def _grads_at_each_step(tiny_base: Path, dataset: Path, out: Path, max_grad_norm: float) -> list[torch.Tensor]:
    """The gradient the optimizer sees at every step, flattened into one vector per step."""
    seen: list[torch.Tensor] = []

    def before_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad.flatten() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen.append(torch.cat(grads).detach().clone())

    handle = register_optimizer_step_pre_hook(before_step)
    try:
        train(_quick(tiny_base, dataset, out, max_grad_norm=max_grad_norm))
    finally:
        handle.remove()
    return seen


def test_max_grad_norm_clips_the_adapter_gradient_and_zero_leaves_it_alone(
    tiny_base: Path, dataset: Path, tmp_path: Path
) -> None:
    free = _grads_at_each_step(tiny_base, dataset, tmp_path / "free", 0.0)
    loose = _grads_at_each_step(tiny_base, dataset, tmp_path / "loose", 1e9)
    clipped = _grads_at_each_step(tiny_base, dataset, tmp_path / "clipped", 1e-3)
    assert len(free) == len(loose) == len(clipped) == 3
    # 0 disables clipping: the gradients are those of a limit no gradient reaches, step for step
    assert all(torch.equal(f, g) for f, g in zip(free, loose))
    free_norms = [g.norm().item() for g in free]
    assert min(free_norms) > 1e-2, free_norms  # the raw gradient is well above the tiny limit below
    # with a limit, every step's gradient norm is at most that limit (and the first is pulled down to it)
    clipped_norms = [g.norm().item() for g in clipped]
    assert all(0 < n <= 1e-3 * (1 + 1e-4) for n in clipped_norms), clipped_norms
    assert clipped_norms[0] == pytest.approx(1e-3, rel=1e-3)
    # step 1 sees the same batch and the same fresh adapter in all runs: clipping only rescales it
    cosine = torch.nn.functional.cosine_similarity(free[0], clipped[0], dim=0).item()
    assert cosine == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(clipped[0], free[0] * (1e-3 / free_norms[0]), rtol=1e-3, atol=1e-12)


# --- 2. caption dropout ----------------------------------------------------------------------------


def _reference_prompts(tiny_base: Path, prompts: list[str], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 states and CLIP pooled vectors of `prompts`, from the pipeline's own encode_prompt."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(tiny_base)
    text, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, max_sequence_length=length)
    return text, pooled


def _row_of(row: torch.Tensor, table: torch.Tensor) -> int | None:
    matches = [i for i in range(len(table)) if torch.allclose(row, table[i], atol=1e-5)]
    return matches[0] if matches else None


@pytest.mark.parametrize("dropout", [0.0, 0.999999])
def test_caption_dropout_trains_on_the_empty_caption_or_on_the_captions(
    tiny_base: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dropout: float
) -> None:
    recorder = ForwardCalls(monkeypatch)
    train(_quick(tiny_base, dataset, tmp_path / "out", steps=4, caption_dropout=dropout))
    calls = recorder.training
    assert len(calls) == 4
    length = calls[0]["encoder_hidden_states"].shape[1]
    captions = [(dataset / f"img{i}.txt").read_text() for i in range(6)]
    caption_text, caption_pooled = _reference_prompts(tiny_base, captions, length)
    empty_text, empty_pooled = _reference_prompts(tiny_base, [""], length)
    for call in calls:
        for text, pooled in zip(call["encoder_hidden_states"], call["pooled_projections"]):
            is_empty = torch.allclose(text, empty_text[0], atol=1e-5) and torch.allclose(pooled, empty_pooled[0], atol=1e-5)
            row = _row_of(pooled, caption_pooled)
            if dropout:
                assert is_empty and row is None
            else:
                assert not is_empty and row is not None
                assert torch.allclose(text, caption_text[row], atol=1e-5)  # T5 and CLIP of the same caption
    if not dropout:  # different steps see different images' captions
        assert len({_row_of(c["pooled_projections"][0], caption_pooled) for c in calls}) > 1


# --- 3. flip -------------------------------------------------------------------------------------


def _asymmetric_images(folder: Path) -> Path:
    """A square and a wide image, each with a red block on its left and a blue stripe on top."""
    folder.mkdir()
    for name, size in (("square", (64, 64)), ("wide", (96, 56))):
        image = Image.new("RGB", size, (200, 200, 200))
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, size[0] // 3, size[1] - 1), fill=(220, 30, 30))
        draw.rectangle((0, 0, size[0] - 1, 8), fill=(30, 30, 220))
        image.save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"{TRIGGER} {name}")
    return folder


def _vae_latents(vae: torch.nn.Module, image: Image.Image) -> torch.Tensor:
    """FLUX's normalised latents of an RGB image: VAE mode, shifted and scaled."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        mode = vae.encode(pixels).latent_dist.mode()
    return ((mode - vae.config.shift_factor) * vae.config.scaling_factor)[0]


def test_flipped_latents_are_the_vae_latents_of_the_mirrored_image(tmp_path: Path) -> None:
    from trainer.engine.batches import make_batch, seeded
    from trainer.engine.cache import build_cache
    from trainer.engine.flow import pack
    from trainer.engine.tiny import build_tiny_pipeline

    examples = load_dataset(_asymmetric_images(tmp_path / "images"), 64, TRIGGER, False)
    pipeline = build_tiny_pipeline()
    cache = build_cache(pipeline, examples, max_sequence_length=32, sample_prompts=[], sample_sequence_length=32,
                        flip=True, device=torch.device("cpu"), offload=False, log=lambda _: None)  # fmt: skip
    assert cache.flipped is not None and len(cache.flipped) == len(examples) == 2
    for example, latents, flipped in zip(examples, cache.latents, cache.flipped):
        upright = load_image(example.image_path, example.bucket)
        mirrored = load_image(example.image_path, example.bucket, flip=True)
        assert np.array_equal(np.asarray(mirrored), np.asarray(upright)[:, ::-1])  # left-right, not upside down
        assert torch.allclose(latents, _vae_latents(pipeline.vae, upright), atol=1e-5)
        assert torch.allclose(flipped, _vae_latents(pipeline.vae, ImageOps.mirror(upright)), atol=1e-5)
        assert not torch.allclose(flipped, latents, atol=1e-2)  # the images are not symmetric

    # batches draw both orientations (about half each); the clean latents are noisy - sigma * velocity
    seen = set()
    for k in range(16):
        batch = make_batch(cache, [0], seeded(0, k), caption_dropout=0.0, sampling="uniform", logit_mean=0.0,
                           logit_std=1.0)  # fmt: skip
        clean = batch.noisy - batch.sigmas.view(-1, 1, 1) * batch.target
        if torch.allclose(clean, pack(cache.latents[0].unsqueeze(0)), atol=1e-4):
            seen.add("upright")
        elif torch.allclose(clean, pack(cache.flipped[0].unsqueeze(0)), atol=1e-4):
            seen.add("mirrored")
        else:
            pytest.fail(f"batch {k} trains on latents that are neither the image's nor its mirror's")
    assert seen == {"upright", "mirrored"}


# --- 4. image modes ----------------------------------------------------------------------------------

WHITE, RED = (255, 255, 255), (220, 30, 30)


def _pixel(path: Path, xy: tuple[int, int]) -> tuple[int, ...]:
    image = load_image(path, (64, 64))  # the images are 64x64: no resize, no crop
    assert image.mode == "RGB" and image.size == (64, 64)
    return tuple(int(v) for v in image.getpixel(xy))


def test_rgba_and_la_images_load_as_rgb_on_white(tmp_path: Path) -> None:
    """Transparent pixels often hide black (0, 0, 0, 0): they must come out white, not black."""
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((0, 0, 31, 63), fill=(*RED, 255))
    ImageDraw.Draw(rgba).rectangle((32, 32, 63, 63), fill=(0, 0, 0, 128))  # half-transparent black
    rgba.save(tmp_path / "rgba.png")
    assert _pixel(tmp_path / "rgba.png", (10, 10)) == RED
    assert _pixel(tmp_path / "rgba.png", (50, 10)) == WHITE
    assert all(abs(v - 127) <= 2 for v in _pixel(tmp_path / "rgba.png", (50, 50)))  # black at 50% over white

    la = Image.new("LA", (64, 64), (0, 0))
    ImageDraw.Draw(la).rectangle((0, 0, 31, 63), fill=(60, 255))
    la.save(tmp_path / "la.png")
    assert _pixel(tmp_path / "la.png", (10, 10)) == (60, 60, 60)
    assert _pixel(tmp_path / "la.png", (50, 10)) == WHITE


def test_palette_images_load_as_rgb_with_their_transparent_index_white(tmp_path: Path) -> None:
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([0, 0, 0, *RED, 30, 30, 220] + [0] * (256 - 3) * 3)
    ImageDraw.Draw(palette).rectangle((0, 0, 31, 63), fill=1)
    ImageDraw.Draw(palette).rectangle((32, 32, 63, 63), fill=2)
    palette.save(tmp_path / "transparent.png", transparency=0)  # index 0 (black) is transparent
    palette.save(tmp_path / "opaque.png")
    assert _pixel(tmp_path / "transparent.png", (10, 10)) == RED
    assert _pixel(tmp_path / "transparent.png", (50, 50)) == (30, 30, 220)
    assert _pixel(tmp_path / "transparent.png", (50, 10)) == WHITE
    assert _pixel(tmp_path / "opaque.png", (50, 10)) == (0, 0, 0)  # no transparency: black stays black


def test_greyscale_images_load_as_rgb_grey(tmp_path: Path) -> None:
    grey = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1)), "L")
    grey.save(tmp_path / "grey.png")
    image = np.asarray(load_image(tmp_path / "grey.png", (64, 64)))
    assert image.shape == (64, 64, 3)
    assert np.array_equal(image[..., 0], np.asarray(grey)) and (image == image[..., :1]).all()


def test_16_bit_greyscale_images_keep_their_tones(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(64, dtype=np.uint16) * 1040, (64, 1))  # 0 .. 65520, left to right
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    image = np.asarray(load_image(tmp_path / "grey16.png", (64, 64))).astype(int)
    expected = ramp[0] >> 8  # the 8-bit tone of each column
    assert np.abs(image[0, :, 0] - expected).max() <= 1, image[0, :, 0]


# --- 5. guidance -------------------------------------------------------------------------------------


def test_predict_feeds_the_guidance_value_to_the_transformer(tiny_base: Path) -> None:
    from diffusers import FluxTransformer2DModel

    from trainer.engine.batches import Batch, predict
    from trainer.engine.flow import image_ids

    transformer = FluxTransformer2DModel.from_pretrained(tiny_base / "transformer")
    assert transformer.config.guidance_embeds
    generator = torch.Generator().manual_seed(0)
    batch = Batch(noisy=torch.randn(1, 16, 64, generator=generator), target=torch.zeros(1, 16, 64),
                  sigmas=torch.tensor([0.5]), text=torch.randn(1, 8, 32, generator=generator),
                  pooled=torch.randn(1, 32, generator=generator), img_ids=image_ids(8, 8),
                  txt_ids=torch.zeros(8, 3))  # fmt: skip
    with torch.no_grad():
        low, low_again, high = (predict(transformer, batch, g) for g in (1.0, 1.0, 4.0))
    assert torch.equal(low, low_again)
    assert (low - high).abs().mean() > 1e-3 * low.abs().mean()


@pytest.mark.parametrize(("configured", "used"), [(None, 3.0), (2.5, 2.5)])
def test_training_uses_the_configured_guidance_else_the_bases(
    tiny_base: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: float | None,
    used: float,
) -> None:  # fmt: skip
    """A base whose preset trains at guidance 3.0: a run without a guidance setting feeds 3.0."""
    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    preset_file = base / "flux_studio_preset.json"
    preset_file.write_text(json.dumps({**json.loads(preset_file.read_text()), "train_guidance": 3.0}))
    recorder = ForwardCalls(monkeypatch)
    train(_quick(base, dataset, tmp_path / "out", guidance=configured, val_every=2, steps=2))
    assert len(recorder.training) == 2 and len(recorder.calls) > 2  # validation ran too
    for call in recorder.calls:
        assert call["guidance"] is not None and torch.all(call["guidance"] == used), call["guidance"]


# --- 6. keep_checkpoints ------------------------------------------------------------------------------


def _folders(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


@pytest.mark.parametrize(("keep", "stop_after", "expected"), [
    (2, None, ["step-000004", "step-000006"]),  # checkpoints at 2, 4, 6; step 7 is the final LoRA
    (1, 5, ["step-000005"]),  # canceled after step 5: its checkpoint is the one kept
])  # fmt: skip
def test_only_the_newest_checkpoints_are_kept(
    tiny_base: Path, dataset: Path, tmp_path: Path, keep: int, stop_after: int | None, expected: list[str]
) -> None:
    out = tmp_path / "out"
    hooks = RecordingHooks(stop_after=stop_after)
    result = train(_quick(tiny_base, dataset, out, steps=7, checkpoint_every=2, keep_checkpoints=keep), hooks)
    reported = [step for step, _ in hooks.checkpoints]
    assert reported == ([2, 4, 6] if stop_after is None else [2, 4, 5])
    assert _folders(out) == expected  # no .partial-* left either
    for name in expected:
        assert {p.name for p in (out / "checkpoints" / name).iterdir()} == {"state.pt", "lora.safetensors"}
    assert result.checkpoint_dir == out / "checkpoints" / expected[-1]


def test_a_new_run_into_a_folder_with_an_earlier_runs_checkpoints_is_refused(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    train(_quick(tiny_base, dataset, out, steps=7, checkpoint_every=3, keep_checkpoints=2))  # leaves 3 and 6
    assert _folders(out) == ["step-000003", "step-000006"]
    hooks = RecordingHooks()
    with pytest.raises(ConfigError, match=r"already holds checkpoints of an earlier run \(latest step-000006\): resume it"):
        train(_quick(tiny_base, dataset, out, steps=7, keep_checkpoints=2), hooks)
    assert not any(line.startswith("loading base") for line in hooks.logs)  # refused before any work
    assert _folders(out) == ["step-000003", "step-000006"]  # the earlier run's checkpoints are untouched


# --- 7. LoRA targets ----------------------------------------------------------------------------------

DOUBLE_ATTENTION = {"attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"}  # fmt: skip
SINGLE_ATTENTION = {"attn.to_q", "attn.to_k", "attn.to_v"}
DOUBLE_FEED_FORWARD = {"ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"}
SINGLE_MLP = {"proj_mlp", "proj_out"}


def _adapted_modules(lora_file: Path) -> set[str]:
    """Module names (no 'transformer.' prefix) with both LoRA halves in a diffusers-layout file."""
    with safe_open(str(lora_file), framework="pt") as handle:
        keys = set(handle.keys())
    halves: dict[str, set[str]] = {}
    for key in keys:
        assert key.startswith("transformer.") and key.endswith((".lora_A.weight", ".lora_B.weight")), key
        module, half = key[len("transformer.") :].rsplit(".", 2)[0], key.rsplit(".", 2)[1]
        halves.setdefault(module, set()).add(half)
    assert all(h == {"lora_A", "lora_B"} for h in halves.values()), halves
    return set(halves)


@pytest.mark.parametrize("targets", ["full", "attention"])
def test_lora_targets_choose_the_adapted_layers(tiny_base: Path, dataset: Path, tmp_path: Path, targets: str) -> None:
    result: TrainResult = train(_quick(tiny_base, dataset, tmp_path / "out", steps=1, lora_targets=targets))
    adapted = _adapted_modules(result.lora_path)  # type: ignore[arg-type]
    double, single = DOUBLE_ATTENTION, SINGLE_ATTENTION
    if targets == "full":
        double, single = double | DOUBLE_FEED_FORWARD, single | SINGLE_MLP
    expected = {f"transformer_blocks.0.{name}" for name in double}  # the tiny base: 1 double, 2 single blocks
    expected |= {f"single_transformer_blocks.{i}.{name}" for i in range(2) for name in single}
    assert adapted == expected
    for outside in ("proj_out", "norm_out.linear", "x_embedder", "context_embedder"):
        assert outside not in adapted  # the top-level layers stay the base's own


def test_a_slow_first_step_does_not_hold_the_speed_and_eta_down(
    tiny_base: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's first step warms up (a resume's first one loads much more): the it/s and the ETA
    from the second step on are those of the steps after it, and the ETA adds the side jobs'
    (checkpoints') share of the time so far.

    The loop's clock is a fake one that moves only by the step and checkpoint times set here, so
    the numbers reported are exact."""
    import time
    from types import SimpleNamespace

    import trainer.engine.training as training

    clock = {"now": 100.0}
    loop_time = {name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
    monkeypatch.setattr(training, "time", SimpleNamespace(**{**loop_time, "perf_counter": lambda: clock["now"]}))
    step_seconds = iter([8.0, 0.5, 0.25, 0.25])  # a slow warm-up step, then steady ones
    step = training.optimizer_step

    def timed_step(*args: Any, **kwargs: Any) -> float:
        loss = step(*args, **kwargs)
        clock["now"] += next(step_seconds)
        return loss

    checkpoint = training.SideJobs.checkpoint

    def timed_checkpoint(self, *args: Any, **kwargs: Any) -> Path:  # type: ignore[no-untyped-def]
        path = checkpoint(self, *args, **kwargs)
        clock["now"] += 3.0
        return path

    monkeypatch.setattr(training, "optimizer_step", timed_step)
    monkeypatch.setattr(training.SideJobs, "checkpoint", timed_checkpoint)
    reports: list[tuple[int, float, float]] = []

    class Reports(RecordingHooks):
        def on_progress(self, progress) -> None:  # type: ignore[no-untyped-def]
            super().on_progress(progress)
            reports.append((progress.step, progress.it_per_s, progress.eta_s))

    hooks = Reports()
    train(train_config(tiny_base, dataset, tmp_path / "out", steps=4, val_every=0, checkpoint_every=2,
                       sample_prompts=[]), hooks)  # fmt: skip
    assert [step for step, _ in hooks.checkpoints] == [2]  # the 3 s side job, after step 2
    exact = lambda value: pytest.approx(value, rel=1e-12)  # noqa: E731
    assert reports == [
        (1, exact(1 / 8), exact(3 * 8.0)),  # only the warm-up step to go by
        (2, exact(1 / 0.5), exact(2 * 0.5)),  # the second step's own time, not a mean with the 8 s one
        (3, exact(2 / 0.75), exact(1 * (0.75 / 2 + 3.0 / 3))),  # steps 2-3; the checkpoint's 3 s over 3 steps
        (4, exact(3 / 1.0), 0.0),
    ]


def test_the_eta_spreads_a_side_jobs_time_over_at_least_its_period_after_a_resume() -> None:
    """Resumed at step 99 of 600 with checkpoints and samples every 50 steps: step 100's checkpoint
    and samples took 3 s, two steps have run since the resume, at 6.47 it/s. The ETA is the 499
    steps left plus the side jobs' share per step over their 50-step period (about 1.8 min), not
    that 3 s spread over 2 steps (half an hour)."""
    import dataclasses

    from trainer.engine.config import TrainConfig
    from trainer.engine.training import eta_seconds, side_period

    cfg = TrainConfig(base="tiny", steps=600, sample_every=50, checkpoint_every=50, val_every=100,
                      sample_prompts=["a zxq"])
    assert side_period(cfg, validating=True) == 50
    assert side_period(dataclasses.replace(cfg, sample_prompts=[], checkpoint_every=0), validating=True) == 100
    assert side_period(dataclasses.replace(cfg, sample_prompts=[], checkpoint_every=0), validating=False) == 0
    eta = eta_seconds(499, 6.47, 3.0, 2, 50)
    assert eta == pytest.approx(499 / 6.47 + 499 * 3.0 / 50)
    assert 100 < eta < 120
    # once more steps than a period have run, the share is the time over all of them, as before
    assert eta_seconds(100, 2.0, 12.0, 400, 50) == pytest.approx(100 * (0.5 + 12.0 / 400))
    assert eta_seconds(10, 2.0, 0.0, 3, 0) == pytest.approx(5.0), "no side jobs: the steps alone"
