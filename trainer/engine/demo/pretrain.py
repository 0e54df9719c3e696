"""Pretrain the demo base from scratch on procedural scenes: `python -m trainer.engine pretrain-demo`.

Two phases, each readable top to bottom:
1. The VAE learns to reconstruct the scenes (L1 + MSE of the decoded mean, a whisper of KL). Its latent mean and
   spread are then measured and written into its config as FLUX's shift and scaling factors, so
   the transformer sees roughly unit-variance latents, as it would with FLUX.1's own VAE.
2. The transformer learns rectified flow on the cached latents, with the frozen text encoders'
   outputs also cached (every caption at every padding length up to the preset's, because the
   engine pads training captions to the longest one and inference to max_sequence_length, and
   T5 runs without a mask). An EMA of the weights is what gets saved.

Every `save_every` steps the EMA pipeline is written to the output folder (fp16 safetensors),
so a run stopped early still leaves a usable base. Everything is seeded: same arguments, same
weights (on the same torch build and thread count).
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..batches import Batch, noised, predict
from ..flow import image_ids, pack, sample_sigmas
from .build import DemoSpec, build_demo_pipeline
from .scenes import draw, random_palette_image, random_scenes

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class PretrainConfig:
    out: str = str(WEIGHTS_DIR)
    seed: int = 0
    images: int = 6144  # procedural scenes, drawn once
    # --- phase 1: VAE
    vae_steps: int = 200
    vae_batch: int = 16
    vae_crop: int = 32  # the VAE is convolutional: 32 px crops teach it the same at a quarter of the cost
    vae_lr: float = 1e-3
    vae_extra: int = 1024  # images in random colours, so the VAE decodes unseen colours too
    kl_weight: float = 1e-6
    # --- phase 2: transformer
    steps: int = 600
    batch: int = 32
    lr: float = 6e-4
    warmup: int = 50
    ema_decay: float = 0.998
    empty_caption: float = 0.05  # share of samples on the empty caption (the engine's dropout uses it)
    guidance: float = 1.0  # the embedded guidance value fed during training and sampling
    max_sequence_length: int = 16
    save_every: int = 100
    threads: int = 2


# `--smoke`: every stage of the real run at a scale that takes seconds, to check the pipeline and
# its reproducibility (tests/engine/test_demo.py); the result draws nothing useful.
SMOKE = dict(images=16, vae_extra=4, vae_steps=2, vae_batch=2, steps=3, batch=2, warmup=1, save_every=1000)


def log(out: Path, text: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    with open(out / "pretrain.log", "a") as handle:
        handle.write(line + "\n")


def to_pixels(images: list) -> torch.Tensor:
    """PIL images to a [N, 3, H, W] tensor in [-1, 1]."""
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images]) / 127.5 - 1.0
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def train_vae(vae: torch.nn.Module, pixels: torch.Tensor, cfg: PretrainConfig, out: Path) -> None:
    vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    started = time.time()
    for step in range(1, cfg.vae_steps + 1):
        for group in optimizer.param_groups:  # cosine decay: sharper edges at the end
            group["lr"] = cfg.vae_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.vae_steps)))
        x = pixels[torch.randint(len(pixels), (cfg.vae_batch,), generator=generator)]
        top, left = (torch.randint(0, (64 - cfg.vae_crop) // 8 + 1, (2,), generator=generator) * 8).tolist()
        x = x[:, :, top : top + cfg.vae_crop, left : left + cfg.vae_crop]  # crops on the latent grid
        posterior = vae.encode(x).latent_dist
        # decode the mean: sampling with the initial unit variance drowns the signal, and in the
        # few steps a CPU can afford the encoder never learns to shrink it (FLUX's VAE variance is
        # negligible anyway; the KL term only keeps the latents from drifting far).
        recon = vae.decode(posterior.mean).sample
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0 or step == 1:
            log(out, f"vae step {step}/{cfg.vae_steps} loss {loss.item():.4f} ({time.time() - started:.0f}s)")
    vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_all(vae: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    return torch.cat([vae.encode(pixels[i : i + 128]).latent_dist.mode() for i in range(0, len(pixels), 128)])


@torch.no_grad()
def encode_captions(pipeline: object, captions: list[str], length: int) -> dict[tuple[str, int], tuple]:
    """(caption, padded length) -> (T5 states [L, D], CLIP pooled [P]) for every length that fits."""
    table = {}
    natural = {c: len(ids) for c, ids in zip(captions, pipeline.tokenizer_2(captions).input_ids)}  # type: ignore[attr-defined]
    for pad in range(1, length + 1):
        fitting = [c for c in captions if natural[c] <= pad]
        for start in range(0, len(fitting), 256):
            chunk = fitting[start : start + 256]
            text, pooled, _ = pipeline.encode_prompt(prompt=chunk, prompt_2=None, max_sequence_length=pad)  # type: ignore[attr-defined]
            for i, caption in enumerate(chunk):
                table[(caption, pad)] = (text[i].clone(), pooled[i].clone())
    return table


def save_base(pipeline: object, transformer: torch.nn.Module, out: Path, cfg: PretrainConfig, step: int) -> None:
    """Write the pipeline with `transformer` (the EMA copy) as fp16 safetensors plus the preset file."""
    from ..presets import write_preset_file
    from .preset import DEMO_PRESET

    saved = copy.copy(pipeline)
    halves = {name: copy.deepcopy(getattr(pipeline, name)).half() for name in ("vae", "text_encoder", "text_encoder_2")}
    saved.register_modules(transformer=copy.deepcopy(transformer).half(), **halves)  # type: ignore[attr-defined]
    saved.save_pretrained(out, safe_serialization=True)  # type: ignore[attr-defined]
    write_preset_file(out, DEMO_PRESET)
    (out / "pretrain.json").write_text(json.dumps({**asdict(cfg), "out": None, "step": step}, indent=2) + "\n")


def pretrain(cfg: PretrainConfig) -> Path:
    """Run both phases into `cfg.out`; the caller's torch thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)  # results are reproducible for a given thread count
    try:
        return _pretrain(cfg)
    finally:
        torch.set_num_threads(threads)


def _pretrain(cfg: PretrainConfig) -> Path:
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.time()
    pipeline = build_demo_pipeline(DemoSpec(seed=cfg.seed))

    # 1. Data: scenes drawn once; the captions are few (colours x shapes x places x backgrounds).
    scenes = random_scenes(cfg.images, cfg.seed)
    pixels = to_pixels([draw(s) for s in scenes])
    captions = [s.caption for s in scenes]
    log(out, f"{len(scenes)} scenes, {len(set(captions))} distinct captions")

    # 2. Phase 1: the VAE, then its latent statistics become FLUX's shift and scale.
    vae = pipeline.vae
    rng = random.Random(cfg.seed + 3)
    extra = to_pixels([random_palette_image(rng) for _ in range(cfg.vae_extra)])
    train_vae(vae, torch.cat([pixels, extra]), cfg, out)
    del extra
    latents = encode_all(vae, pixels)
    shift, scale = latents.mean().item(), 1.0 / latents.std().item()
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    latents = (latents - shift) * scale
    recon_error = (vae.decode(latents[:64] / scale + shift).sample - pixels[:64]).abs().mean().item() * 127.5
    log(out, f"vae done: shift {shift:.4f} scale {scale:.4f}, reconstruction error {recon_error:.1f}/255")

    # 3. Text: cache every caption at every padding length, and the empty caption.
    table = encode_captions(pipeline, sorted(set(captions)) + [""], cfg.max_sequence_length)
    natural = [len(ids) for ids in pipeline.tokenizer_2(captions).input_ids]

    # 4. Phase 2: the transformer, rectified flow, with an EMA copy.
    transformer = pipeline.transformer
    transformer.train().requires_grad_(True)
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(cfg.seed + 2)
    tokens = pack(latents[:1]).shape[1]
    ids = image_ids(*latents.shape[-2:])
    started = time.time()
    for step in range(1, cfg.steps + 1):
        # warmup, then constant: the schedule never looks at cfg.steps, so the checkpoint at step
        # N of a long run is the same as the end of a run with --steps N (the EMA does the settling).
        factor = min(1.0, step / cfg.warmup)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * factor
        picks = torch.randint(len(scenes), (cfg.batch,), generator=generator).tolist()
        # one padding length per batch, from the longest caption in it up to the preset's
        longest = max(natural[i] for i in picks)
        pad = int(torch.randint(longest, cfg.max_sequence_length + 1, (1,), generator=generator))
        empty = (torch.rand(cfg.batch, generator=generator) < cfg.empty_caption).tolist()
        texts = [table[("" if e else captions[i], pad)] for i, e in zip(picks, empty)]
        clean = pack(latents[picks])
        noise = torch.randn(clean.shape, generator=generator)
        sigmas = sample_sigmas(cfg.batch, "shift", tokens, 0.0, 1.0, generator)
        noisy, target = noised(clean, noise, sigmas)
        batch = Batch(noisy, target, sigmas, torch.stack([t for t, _ in texts]), torch.stack([p for _, p in texts]),
                      ids, torch.zeros(pad, 3))  # fmt: skip
        loss = F.mse_loss(predict(transformer, batch, cfg.guidance), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))  # a short-memory EMA early on
        with torch.no_grad():
            for e, p in zip(ema.parameters(), transformer.parameters()):
                e.lerp_(p, 1 - decay)
        if step % 25 == 0 or step == 1:
            rate = (time.time() - started) / step
            log(out, f"step {step}/{cfg.steps} loss {loss.item():.4f} lr {cfg.lr * factor:.2e} "
                     f"({rate:.2f}s/step, {rate * (cfg.steps - step) / 60:.1f} min left)")  # fmt: skip
        if step % cfg.save_every == 0 or step == cfg.steps:
            save_base(pipeline, ema, out, cfg, step)
            log(out, f"saved EMA base at step {step} to {out}")
    log(out, f"done in {(time.time() - began) / 60:.1f} min")
    return out


def run_pretrain(args: object) -> int:
    """The `pretrain-demo` subcommand: flags given override PretrainConfig's defaults."""
    from ..errors import ConfigError

    overrides = ("out", "steps", "vae_steps", "seed", "images", "batch", "threads")
    values = {name: getattr(args, name) for name in overrides if getattr(args, name, None) is not None}
    values = {k: (str(v) if k == "out" else v) for k, v in values.items()}
    if getattr(args, "smoke", False):
        if "out" not in values:  # never let a seconds-long run replace the shipped weights
            raise ConfigError("--smoke needs --out: it must not overwrite the shipped demo weights")
        values = {**SMOKE, **values}
    print(pretrain(PretrainConfig(**values)))
    return 0
