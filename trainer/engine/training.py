"""FLUX.1 LoRA training: `train(config, hooks) -> TrainResult`.

Read `train()` top to bottom: check the input, load the base, encode the dataset once, add the
adapter, then the loop (batches -> flow-matching loss -> AdamW), with validation, samples and
checkpoints on their schedules, and the stop flag polled before every step.

This module holds the loop and what a step needs: the optimizer step itself, what to do when
memory runs out, and when to stop. The optimizer and schedule are chosen in `optimizers.py`; the
files a run writes on the way (checkpoints, samples, the final LoRA) in `side_jobs.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from .batches import Batch, BatchPlan, loss_of, make_batch, seeded, validation_batches, validation_loss
from .cache import build_cache
from .checkpoint import dataset_fingerprint, latest_checkpoint, load_checkpoint
from .compiling import compile_blocks, new_step, use_cuda_graphs
from .config import TrainConfig
from .data import describe, load_dataset
from .eager_attention import eager_attention
from .ema import AdapterEMA
from .errors import ConfigError, OutOfMemoryError, StopRequested
from .fp8 import fp8_support, use_fp8
from .fused_lora import fused_adapters
from .hooks import Progress, TrainHooks, TrainResult
from .lora import add_lora, diffusers_rank, load_raw_state_dict, modules_outside, read_lora, start_from
from .models import can_quantize, compute_dtype, load_pipeline, load_transformer, resolve_device
from .optimizers import ADAMW8BIT_NEEDS, Update, make_optimizer, make_scheduler, optimizer_name
from .precision import training_precision
from .presets import base_source, preset_for
from .side_jobs import SideJobs



def side_period(cfg: TrainConfig, validating: bool) -> int:
    """Steps between the loop's side jobs (samples, checkpoints, validation): the shortest period
    of those the run does; 0 when it does none."""
    periods = [cfg.sample_every if cfg.sample_prompts else 0, cfg.checkpoint_every, cfg.val_every if validating else 0]
    return min((p for p in periods if p and p > 0), default=0)


def eta_seconds(remaining: int, it_per_s: float, side_s: float, steps_run: int, period: int) -> float:
    """Seconds left: the steps at the current speed, plus the side jobs' share per step. That share
    is their time so far spread over at least one period: a run resumed just before a checkpoint
    has run a step or two when the first one comes, and spread over those the ETA read hours."""
    return remaining * (1 / it_per_s + side_s / max(steps_run, period, 1))


def train(config: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    hooks = hooks or TrainHooks()
    cfg = config.resolve()
    out = Path(cfg.output_dir)

    # 1. Everything that can be wrong with the input fails here, before any model is loaded.
    examples = load_dataset(cfg.images_dir, cfg.resolution, cfg.trigger_word, cfg.add_trigger_to_captions)  # type: ignore[arg-type]
    init_state = None
    if cfg.init_lora:
        init_state, _ = read_lora(cfg.init_lora)
        cfg = _adopt_rank(cfg, config, diffusers_rank(init_state), hooks)
        cfg = _adopt_targets(cfg, init_state, hooks)
    dataset = dataset_fingerprint(examples)
    checkpoint = latest_checkpoint(out) if cfg.resume else None
    saved = load_checkpoint(checkpoint, cfg.to_dict(), dataset) if checkpoint else None
    if cfg.resume and not checkpoint:
        finished = _final_step(out / "lora.safetensors")
        hooks.on_log(f"resume requested but {out} has no checkpoint: starting from step 0" + (
            f". Its run finished at step {finished} before writing one (checkpoint_every {cfg.checkpoint_every}); "
            "to train that LoRA further, start from it with init_lora" if finished else ""))
    earlier = None if cfg.resume else latest_checkpoint(out)
    if earlier is not None:  # a new run would mix its checkpoints with these, and prune by step number
        raise ConfigError(
            f"{out} already holds checkpoints of an earlier run (latest {earlier.name}): resume it (resume: true, "
            "--resume), or give another output folder (or delete its checkpoints folder) to start over"
        )
    device = resolve_device(cfg.device)
    dtype = compute_dtype(device)
    # a resume keeps the optimizer its state came from, even where `auto` would now choose another
    # (it follows the memory mode, which a resume may change)
    kept = saved.get("optimizer_name") if saved is not None and cfg.optimizer == "auto" else None
    if (kept or optimizer_name(cfg, device)) == "adamw8bit" and not can_quantize(device):
        raise ConfigError(ADAMW8BIT_NEEDS)
    if cfg.fp8 and fp8_support(device):
        raise ConfigError(fp8_support(device))
    out.mkdir(parents=True, exist_ok=True)
    config_path = cfg.to_yaml(out / "config.yaml")
    hooks.on_log(f"{describe(examples)}; device {device}, {dtype}, {cfg.memory_mode} memory")

    graphs = False
    try:
        # 2. Load the base. Low memory: on the CPU, and the parts visit the GPU in turn; a 4-bit
        #    transformer is loaded only once the dataset is encoded and the text encoders are gone.
        #    Loading and encoding take minutes on a large base or dataset: a stop is heard between
        #    the stages and between images.
        low = cfg.memory_mode == "low"
        quantize = low and can_quantize(device) and base_source(cfg.base) != "builtin:tiny"  # tiny is built whole
        hooks.on_log(f"loading base {cfg.base}" + (" (the transformer later, in 4-bit NF4)" if quantize else ""))
        pipeline = load_pipeline(cfg.base, "cpu" if low else device, dtype, with_transformer=not quantize)
        pipeline.set_progress_bar_config(disable=True)
        _stop_point(hooks)

        # 3. Encode images and captions once; the text encoders are freed afterwards.
        preset = preset_for(cfg.base)
        cache = build_cache(
            pipeline, examples, max_sequence_length=cfg.max_sequence_length, pad_captions=cfg.pad_captions,  # type: ignore[arg-type]
            sample_prompts=cfg.sample_prompts,  # type: ignore[arg-type]
            sample_sequence_length=preset.max_sequence_length, flip=cfg.flip, device=device, offload=low,
            log=hooks.on_log, stop=hooks.should_stop,
        )  # fmt: skip
        _stop_point(hooks)
        if pipeline.transformer is None:  # only the encoded dataset and the VAE are left in memory
            pipeline.transformer = load_transformer(cfg.base, device, dtype, quantize=True)  # placed by bitsandbytes
        else:
            pipeline.transformer.to(device)
        transformer = pipeline.transformer
        if not transformer.config.guidance_embeds:
            hooks.on_log("this base has no guidance embedding (FLUX.1-schnell's kind): it is distilled for 4-step "
                         "sampling, and a LoRA trained on it directly tends to weaken that; FLUX.1-dev is the usual base")

        # 4. The adapter: seeded init, fp32 weights; then an existing LoRA or a checkpoint on top.
        transformer.requires_grad_(False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            params = add_lora(transformer, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)  # type: ignore[arg-type]
        if init_state is not None and saved is None:
            start_from(transformer, init_state, cfg.lora_alpha)  # type: ignore[arg-type]
            hooks.on_log(f"continuing from {cfg.init_lora}")
        if cfg.fp8:  # after the adapter (its base layers are swapped too), before compiling
            count = use_fp8(transformer)
            slow = " (on a CPU only to check the arithmetic: slower than fp32)" if device.type == "cpu" else ""
            hooks.on_log(f"fp8: the matmuls of {count} frozen base layers run in FP8{slow}")
        if cfg.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()  # recompute activations: less memory, ~30% slower
        graphs, why_not = use_cuda_graphs(cfg.cuda_graphs, device, cfg.grad_accum, bool(cfg.gradient_checkpointing))
        if why_not:
            hooks.on_log(why_not)
        if cfg.compile:  # after the adapter, so its layers are compiled in
            compile_blocks(transformer, hooks.on_log, cuda_graphs=graphs)
        transformer.train()
        optimizer = make_optimizer(params, cfg, device, hooks, kept)
        scheduler = make_scheduler(optimizer, cfg)
        step, losses, val_losses = 0, [], []
        if saved is not None:
            load_raw_state_dict(transformer, saved["lora"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            step, losses, val_losses = saved["step"], list(saved["losses"]), list(saved["val_losses"])
            hooks.on_log(f"resumed from {checkpoint} at step {step}")
            _explain_resume(cfg, saved, step, out, hooks)
        n_params = sum(p.numel() for p in params)
        hooks.on_log(f"LoRA rank {cfg.lora_rank} on {cfg.lora_targets} targets: {n_params:,} trainable parameters")

        ema = AdapterEMA(params, cfg.ema_decay) if cfg.ema_decay else None
        if ema is not None:
            if saved is not None and "ema" in saved:
                ema.load_state_dict(saved["ema"])
            hooks.on_log(f"the saved LoRA and the samples use the weights' moving average (decay {cfg.ema_decay:g})")
        run = SideJobs(cfg, out, transformer, pipeline, cache, device, dtype, hooks, params, optimizer, scheduler, graphs,
                       dataset, ema)
        plan, update = BatchPlan(cache.buckets, cfg.batch_size, cfg.seed), run.update
        # Mixed precision on CUDA (bf16 LoRA matmuls, fp32 adapter weights), without cuDNN attention;
        # eager steps also run the adapter and the attention through fused kernels.
        with training_precision(transformer, device, dtype), eager_kernels(transformer, compiled=cfg.compile, log=hooks.on_log):
            val_set = validation_batches(cache, cfg.val_timesteps, cfg.seed) if cfg.val_every else []
            if val_set and step == 0:
                val_losses.append((0, validation_loss(transformer, val_set, cfg.guidance, device, dtype)))
                hooks.on_log(f"validation loss before training: {val_losses[-1][1]:.4f}")

            # 5. The loop. One step = grad_accum micro-batches, then one optimizer update.
            sample_paths: list[Path] = []
            durations: deque[float] = deque(maxlen=20)  # recent step times, for it/s and ETA
            side_s, steps_run = 0.0, 0  # time spent on validation, samples and checkpoints; steps this call
            canceled = False
            latest = checkpoint
            while step < cfg.steps:
                if hooks.should_stop():  # polled before each step: a cancel waits at most one step
                    canceled = True
                    break
                step += 1
                lr = update.optimizer.param_groups[0]["lr"]  # the rate this step trains at (the schedule moves after it)
                started = time.perf_counter()
                micro_batches = lambda: (  # noqa: E731  (a step that ran out of memory is re-run with the same batches)
                    make_batch(cache, plan.batch(k), seeded(cfg.seed, k), caption_dropout=cfg.caption_dropout,
                               sampling=cfg.timestep_sampling, logit_mean=cfg.logit_mean, logit_std=cfg.logit_std)
                    for k in range((step - 1) * cfg.grad_accum, step * cfg.grad_accum)  # global micro-batch index k
                )  # fmt: skip
                try:
                    step_loss: float | None = optimizer_step(transformer, micro_batches(), cfg.grad_accum, update)
                except torch.OutOfMemoryError as error:  # in the forward or backward: nothing was updated yet
                    if cfg.gradient_checkpointing or graphs or isinstance(error, UpdateOutOfMemoryError):
                        raise  # nothing lighter to switch to here, or the update already began
                    step_loss = None  # retried below, once the failed attempt's tensors are gone
                if step_loss is None:
                    cfg = run.cfg = _checkpointing_after_oom(cfg, transformer, update, device, step, hooks)
                    step_loss = optimizer_step(transformer, micro_batches(), cfg.grad_accum, update)
                losses.append(step_loss)
                trained = time.perf_counter()
                durations.append(trained - started)
                steps_run += 1
                if steps_run == 2:  # a run's first step warms up (allocations, kernels, a resume's loading):
                    durations.popleft()  # it would hold it/s and the ETA low for the next 20 steps

                val_loss = None
                if val_set and (step % cfg.val_every == 0 or step == cfg.steps):
                    val_loss = validation_loss(transformer, val_set, cfg.guidance, device, dtype)
                    val_losses.append((step, val_loss))
                # it/s is the training speed; the ETA adds the side jobs' share seen so far (samples
                # and checkpoints come every N steps, so their time is spread over the steps)
                it_per_s = len(durations) / sum(durations)
                side_s += time.perf_counter() - trained
                eta = eta_seconds(cfg.steps - step, it_per_s, side_s, steps_run, side_period(cfg, bool(val_set)))
                hooks.on_progress(Progress(step, cfg.steps, step_loss, lr, it_per_s, eta, val_loss))
                side_started = time.perf_counter()
                if cfg.sample_prompts and cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.steps:
                    sample_paths += run.render_samples(step)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    latest = run.checkpoint(step, losses, val_losses)
                side_s += time.perf_counter() - side_started

        # 6. Canceled: keep a resumable checkpoint of where we are. Finished: the final files.
        if canceled:
            hooks.on_log(f"stopped at step {step} of {cfg.steps}")
            if latest is None or not latest.name.endswith(f"{step:06d}"):
                latest = run.checkpoint(step, losses, val_losses)
            lora_path = latest / "lora.safetensors" if latest else None
            return TrainResult(lora_path, None, config_path, sample_paths, step, True, losses, val_losses, latest)
        if cfg.sample_prompts:
            sample_paths += run.render_samples(step)
        lora_path, kohya_path = run.save_final(step)
        hooks.on_log(f"saved {lora_path} and {kohya_path.name}")
        return TrainResult(lora_path, kohya_path, config_path, sample_paths, step, False, losses, val_losses, latest)
    except StopRequested:  # while loading or encoding: nothing trained in this call, nothing to save
        step = saved["step"] if saved is not None else 0
        hooks.on_log(f"stopped before training, at step {step} of {cfg.steps}")
        lora_path = checkpoint / "lora.safetensors" if checkpoint is not None and saved is not None else None
        losses, val_losses = (list(saved["losses"]), list(saved["val_losses"])) if saved is not None else ([], [])
        return TrainResult(lora_path, None, config_path, [], step, True, losses, val_losses, checkpoint if saved else None)
    except (torch.OutOfMemoryError, RuntimeError) as error:
        # CUDA raises OutOfMemoryError; the CPU allocator raises a RuntimeError with this text.
        if isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error):
            raise OutOfMemoryError(out_of_memory_advice(cfg, device)) from error
        raise
    finally:
        # A worker runs many jobs in one process: give the GPU memory back before the next one.
        if graphs:  # CUDA graphs keep their memory pool, and the adapter's tensors, until reset
            torch.compiler.reset()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@contextlib.contextmanager
def eager_kernels(transformer: torch.nn.Module, *, compiled: bool, log: Callable[[str], None]) -> Iterator[None]:
    """Eager steps: the adapted layers and the attention in fewer operations (`fused_lora`,
    `eager_attention`). Compiled steps keep diffusers' and peft's modules, which Inductor fuses
    (compiled, the fused autograd functions were no faster: bench/README-train.md)."""
    if compiled:
        yield
        return
    with fused_adapters(transformer) as layers, eager_attention(transformer):
        if layers:
            log(f"adapter: {layers} layers train through fused LoRA matmuls")
        yield


def _stop_point(hooks: TrainHooks) -> None:
    if hooks.should_stop():
        raise StopRequested


def optimizer_step(transformer: torch.nn.Module, micro_batches: Iterable[Batch], count: int, update: Update) -> float:
    """One optimizer step over `count` micro-batches (gradient accumulation); returns the mean loss."""
    step_loss = 0.0
    for batch in micro_batches:
        if update.graphs:
            new_step()
        loss = loss_of(transformer, batch.to(update.device, update.dtype), update.guidance)
        (loss / count).backward()  # average the gradient over micro-batches
        step_loss += loss.item() / count
    try:
        if update.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(update.params, update.max_grad_norm)  # one bad batch cannot wreck the adapter
        update.optimizer.step()
    except torch.OutOfMemoryError as error:  # part of the update may be applied: this step cannot be re-run
        raise UpdateOutOfMemoryError(str(error)) from error
    update.scheduler.step()
    update.optimizer.zero_grad(set_to_none=True)
    if update.ema is not None:
        update.ema.update()
    return step_loss


class UpdateOutOfMemoryError(torch.OutOfMemoryError):
    """Memory ran out in the optimizer update, after the step's gradients were computed."""


def _checkpointing_after_oom(
    cfg: TrainConfig, transformer: torch.nn.Module, update: Update, device: torch.device, step: int, hooks: TrainHooks
) -> TrainConfig:
    """Fast mode keeps every activation for the backward "when memory allows": when it does not,
    turn gradient checkpointing on (activations recomputed block by block, about 30% slower) and
    let the caller re-run the step. The step's losses are the same either way."""
    update.optimizer.zero_grad(set_to_none=True)  # the failed attempt's partial gradients
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    transformer.enable_gradient_checkpointing()
    hooks.on_log(f"out of memory at step {step}: gradient checkpointing is now on (steps about 30% slower, same "
                 "results); the step is being run again")  # fmt: skip
    return dataclasses.replace(cfg, gradient_checkpointing=True)


def out_of_memory_advice(cfg: TrainConfig, device: torch.device) -> str:
    """What to change after running out of memory, the lightest change first."""
    # low memory computes the same steps, so it is the one change a resume from a checkpoint accepts
    lighter = [] if cfg.memory_mode == "low" else ["memory_mode 'low' (a resume may switch to it)"]
    if cfg.batch_size > 1:
        lighter.append(f"batch_size 1 with grad_accum {cfg.batch_size * cfg.grad_accum} (same effective batch)")
    if len(cfg.resolutions) > 1:  # each extra resolution is another set of examples, the largest costs most
        lighter.append(f"fewer or smaller resolutions than {cfg.resolution}")
    else:
        lighter.append(f"a smaller resolution than {cfg.resolution}")
    lighter.append(f"a lower lora_rank than {cfg.lora_rank}")
    return f"out of memory on {device}. Try " + "; or ".join(lighter) + "."


def _explain_resume(cfg: TrainConfig, saved: dict, step: int, out: Path, hooks: TrainHooks) -> None:
    """Say what a resume does that a person may not expect: a finished run has no checkpoint at its
    last step, so resuming it trains its last steps again; and a decaying learning rate stretches
    over the new number of steps."""
    finished = _final_step(out / "lora.safetensors")
    if finished is not None and finished > step:
        again = f"step {finished} trains" if finished == step + 1 else f"steps {step + 1}-{finished} train"
        hooks.on_log(f"this run already finished at step {finished}; its last checkpoint is at step {step}, so {again} "
                     "again and replace its LoRA. To train a finished LoRA further, start a new run from it with init_lora")
    before = saved.get("config", {}).get("steps")
    if before and before != cfg.steps and cfg.lr_scheduler != "constant":
        hooks.on_log(f"the {cfg.lr_scheduler} learning-rate schedule now spans {cfg.steps} steps instead of {before}")


def _final_step(path: Path) -> int | None:
    """The step a finished run's lora.safetensors says it was saved at, if there is one."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            return int((handle.metadata() or {}).get("flux_studio.steps", ""))
    except (OSError, ValueError, RuntimeError):  # an unreadable or foreign file says nothing
        return None


def _adopt_targets(cfg: TrainConfig, state: dict[str, torch.Tensor], hooks: TrainHooks) -> TrainConfig:
    """Continuing a LoRA keeps every layer it adapts: widen an attention-only run to the full set
    when the file adapts feed-forward layers too, and refuse (before loading anything) a file that
    adapts layers this engine does not train (other trainers' norm or embedding adapters)."""
    beyond = modules_outside(state, "full")
    if beyond:
        raise ConfigError(
            f"init_lora adapts layers this engine does not train, e.g. {beyond[0]} ({len(beyond)} in all); it "
            "continues LoRAs on the transformer's attention, feed-forward and single-block proj_mlp/proj_out "
            "layers only (not its other layers, nor the text encoders)"
        )
    if cfg.lora_targets != "full" and modules_outside(state, cfg.lora_targets):
        hooks.on_log(f"init_lora adapts feed-forward layers too; training lora_targets full instead of {cfg.lora_targets}")
        return dataclasses.replace(cfg, lora_targets="full")
    return cfg


def _adopt_rank(cfg: TrainConfig, asked: TrainConfig, file_rank: int, hooks: TrainHooks) -> TrainConfig:
    """Continuing a LoRA keeps its rank; say so when the config asked for another one."""
    if file_rank == cfg.lora_rank:
        return cfg
    hooks.on_log(f"init_lora has rank {file_rank}; training at that rank instead of {cfg.lora_rank}")
    alpha = float(file_rank) if asked.lora_alpha is None else cfg.lora_alpha
    return dataclasses.replace(cfg, lora_rank=file_rank, lora_alpha=alpha)
