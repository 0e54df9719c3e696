"""Gallery fixtures: tiny LoRA files made with peft (no training), finished jobs that own them."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from django.core.files.base import ContentFile

from trainer.models import JobState, TrainingJob

PROMPT = "a red circle on a blue background"


def make_lora(path: Path, seed: int, targets: str = "attention") -> Path:
    """A random rank-4 LoRA on the tiny transformer, saved like the trainer saves its output."""
    import torch

    from trainer.engine import lora as lora_files
    from trainer.engine.kohya import to_kohya
    from trainer.engine.tiny import build_tiny_pipeline

    transformer = build_tiny_pipeline().transformer
    lora_files.add_lora(transformer, rank=4, alpha=4, targets=targets)
    generator = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=generator) * 0.5 for k, v in lora_files.raw_state_dict(transformer).items()}
    lora_files.save_lora(path, state, 1.0, torch.float32, {"seed": seed})
    from safetensors.torch import save_file

    save_file(to_kohya(lora_files.folded(state, 1.0, torch.float32)), str(path.with_name("lora_kohya.safetensors")))
    return path


@pytest.fixture(scope="session")
def lora_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {
        "one": make_lora(root / "one" / "lora.safetensors", seed=1),
        "two": make_lora(root / "two" / "lora.safetensors", seed=2, targets="full"),
    }


@pytest.fixture
def make_job(lora_files: dict[str, Path]) -> Callable[..., TrainingJob]:
    def make(owner, which: str = "one", trigger: str = "zqx", base: str = "tiny", state: str = JobState.SUCCEEDED) -> TrainingJob:
        job = TrainingJob.objects.create(
            owner=owner, name=f"{owner.username} {which}", state=state, base_model=base, trigger_word=trigger,
            config={"preset": "fast", "learning_rate": 1e-3, "lora_rank": 4, "resolution": 64, "batch_size": 1, "seed": 7},
            snapshot=[{"image": "x.png", "caption": f"a photo of {trigger}"}], total_steps=4, step=4,
        )
        if state == JobState.SUCCEEDED:
            path = lora_files[which]
            job.lora_file.save("lora.safetensors", ContentFile(path.read_bytes()), save=False)
            job.kohya_file.save("lora_kohya.safetensors", ContentFile(path.with_name("lora_kohya.safetensors").read_bytes()), save=False)
            job.save()
        return job

    return make


@pytest.fixture(scope="session")
def worker_cache():
    """One worker's pipeline cache for the generation tests: the tiny base loads once."""
    from gallery.inference.cache import PipelineCache

    return PipelineCache(device="cpu")


@pytest.fixture
def use_worker_cache(monkeypatch, worker_cache):
    """Generations run in this test use `worker_cache`, as a worker's do its own."""
    from gallery import generation_run

    monkeypatch.setattr(generation_run, "_cache", worker_cache)
    return worker_cache
