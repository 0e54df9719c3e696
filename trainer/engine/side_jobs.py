"""What a training run writes besides its losses: checkpoints, sample images and the final LoRA files.

Separate from the loop in `training.py`, which calls these on their schedules (and once at the end):
they hold everything the side jobs need (the adapted transformer, the pipeline for samples, the
optimizer and schedule a checkpoint saves) so that the loop reads as the steps it takes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .cache import CachedDataset
from .checkpoint import save_checkpoint
from .compiling import eager
from .config import TrainConfig, sample_seed
from .ema import AdapterEMA, averaged
from .hooks import TrainHooks
from .kohya import to_kohya
from .lora import folded, raw_state_dict, save_lora
from .optimizers import OPTIMIZER_NAMES, Update


@dataclasses.dataclass
class SideJobs:
    """What the loop's side jobs (samples, checkpoints, final files) need."""

    cfg: TrainConfig
    out: Path
    transformer: Any
    pipeline: Any
    cache: CachedDataset
    device: torch.device
    dtype: torch.dtype
    hooks: TrainHooks
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    graphs: bool = False
    dataset: str = ""  # dataset_fingerprint: a resume checks it trains on the same images and captions
    ema: AdapterEMA | None = None  # the weights' moving average (ema_decay): what the LoRA files and samples use

    @property
    def update(self) -> Update:
        cfg = self.cfg
        return Update(self.params, self.optimizer, self.scheduler, cfg.guidance, cfg.max_grad_norm, self.device,
                      self.dtype, self.graphs, self.ema)  # fmt: skip

    @property
    def scale(self) -> float:
        return self.cfg.lora_alpha / self.cfg.lora_rank  # type: ignore[operator]

    def architecture(self) -> str:
        """ModelSpec's name for what the LoRA is for: a base without guidance embedding is schnell's kind."""
        return "flux-1-dev/lora" if self.transformer.config.guidance_embeds else "flux-1-schnell/lora"

    def info(self, step: int) -> dict[str, Any]:
        """Safetensors metadata: enough to know what a LoRA file is without its job."""
        return {"base": self.cfg.base, "trigger_word": self.cfg.trigger_word, "rank": self.cfg.lora_rank,
                "alpha": self.cfg.lora_alpha, "steps": step, "resolution": self.cfg.resolution,
                "targets": self.cfg.lora_targets}  # fmt: skip

    def checkpoint(self, step: int, losses: list[float], val_losses: list[tuple[int, float]]) -> Path:
        state = {"lora": raw_state_dict(self.transformer), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "losses": losses, "val_losses": val_losses,
                 "config": self.cfg.to_dict(), "optimizer_name": OPTIMIZER_NAMES.get(type(self.optimizer).__name__),
                 "dataset": self.dataset}  # fmt: skip
        loadable = state["lora"]  # the trained weights resume; the loadable LoRA is what the run would save now
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
            with self.ema.applied():
                loadable = raw_state_dict(self.transformer)
        write = lambda folder: save_lora(folder / "lora.safetensors", loadable, self.scale, self.dtype, self.info(step))  # noqa: E731
        path = save_checkpoint(self.out, step, state, self.cfg.keep_checkpoints, write)
        self.hooks.on_checkpoint(step, path)
        return path

    def save_final(self, step: int) -> tuple[Path, Path]:
        from safetensors.torch import save_file

        with averaged(self.ema):
            state = raw_state_dict(self.transformer)
        lora_path = save_lora(self.out / "lora.safetensors", state, self.scale, self.dtype, self.info(step))
        kohya = to_kohya(folded(state, self.scale, self.dtype))
        kohya_path = self.out / "lora_kohya.safetensors"
        metadata = {"ss_network_module": "networks.lora_flux", "ss_network_dim": str(self.cfg.lora_rank),
                    "ss_network_alpha": str(self.cfg.lora_rank), "ss_base_model_version": "flux1",
                    "ss_steps": str(step), "modelspec.trigger_phrase": self.cfg.trigger_word,
                    "modelspec.architecture": self.architecture(), "flux_studio.base": self.cfg.base}  # fmt: skip
        save_file(kohya, str(kohya_path), metadata=metadata)
        return lora_path, kohya_path

    def render_samples(self, step: int) -> list[Path]:
        """One image per sample prompt, each with its own fixed seed so steps compare like for like.

        Drawn at the largest resolution trained (with several, the one the LoRA is mostly used at),
        with the weights the LoRA file would hold now (their moving average, with ema_decay).
        """
        with averaged(self.ema):
            return self._render_samples(step)

    @torch.no_grad()
    @eager()
    def _render_samples(self, step: int) -> list[Path]:
        cfg, samples, paths = self.cfg, self.cache.samples, []
        assert samples is not None
        self.transformer.eval()
        self.pipeline.vae.to(self.device)
        folder = self.out / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        for i, prompt in enumerate(cfg.sample_prompts):
            if self.hooks.should_stop():
                break
            image = self.pipeline(
                prompt_embeds=samples.text[i : i + 1].to(self.device, self.dtype),
                pooled_prompt_embeds=samples.pooled[i : i + 1].to(self.device, self.dtype),
                height=cfg.sample_resolution, width=cfg.sample_resolution, num_inference_steps=cfg.sample_steps,
                guidance_scale=cfg.sample_guidance, generator=torch.Generator().manual_seed(sample_seed(cfg.seed, i)),
            ).images[0]  # fmt: skip
            path = folder / f"step-{step:06d}-{i}.png"
            image.save(path)
            self.hooks.on_sample(step, prompt, path)
            paths.append(path)
        if cfg.memory_mode == "low":
            self.pipeline.vae.to("cpu")
        self.transformer.train()
        return paths
