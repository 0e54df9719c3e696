"""bench/gpu_train_speed.py runs its real code path on the CPU with a small variant of its builder.

No GPU here: the FLUX.1-dev build is checked on the meta device (shapes only, no memory), and the
whole training path (engine LoRA, engine optimizer step, FLOP count, timing) runs at small size.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu_train_speed.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_train_speed", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_train_speed"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_the_flux_dev_architecture_is_the_real_one(bench: ModuleType) -> None:
    model = bench.build_transformer("flux-dev", torch.device("meta"), torch.bfloat16)
    assert (len(model.transformer_blocks), len(model.single_transformer_blocks)) == (19, 38)
    assert model.config.num_attention_heads * model.config.attention_head_dim == 3072
    assert model.config.guidance_embeds and next(model.parameters()).dtype == torch.bfloat16
    assert 11.8e9 < sum(p.numel() for p in model.parameters()) < 12.0e9  # FLUX.1-dev: 11.9B


@pytest.mark.parametrize("mode", ["fast", "low"])
def test_the_small_variant_trains_and_reports_on_the_cpu(bench: ModuleType, mode: str) -> None:
    result = bench.run("small", 64, mode, device="cpu", max_seq=16, steps=1, warmup=1)
    assert result.lora_moved  # the engine's optimizer step really updated the adapter
    assert result.s_per_step > 0 and result.flops_per_step > 1e8 and result.tflops > 0
    assert result.peak_vram_gb is None and result.optimizer == "AdamW"


def test_the_fp8_candidate_runs_the_engines_fp8_layers_on_the_cpu(bench: ModuleType, capsys) -> None:
    result = bench.run("small", 64, "fast", device="cpu", max_seq=16, steps=1, warmup=1, fp8=True)
    assert result.mode.endswith("+fp8") and result.lora_moved and result.loss == result.loss  # not NaN
    assert "fp8: " in capsys.readouterr().out


def test_the_model_flops_formula_matches_torchs_own_count(bench: ModuleType) -> None:
    """The TFLOP/s the bench prints divide the formula's FLOPs; torch counts the same step within 3%."""
    transformer = bench.build_transformer("small", torch.device("cpu"), torch.float32)
    params = bench.add_lora(transformer, 16, 16.0, "full")
    transformer.train()
    cfg = bench.TrainConfig(optimizer="adamw", steps=10)
    optimizer = bench.make_optimizer(params, cfg, torch.device("cpu"), bench.TrainHooks())
    update = bench.Update(params, optimizer, bench.make_scheduler(optimizer, cfg), 1.0, 1.0, torch.device("cpu"), torch.float32)
    for resolution, max_seq in [(256, 32), (512, 128)]:
        batch = bench.make_batches("small", resolution, max_seq, count=1)[0]
        with sdpa_kernel(SDPBackend.MATH):  # torch counts no FLOPs in the CPU's fused attention kernel
            counted = bench.count_flops(transformer, batch, update)
        assert bench.model_flops("small", resolution, max_seq) == pytest.approx(counted, rel=0.03)
