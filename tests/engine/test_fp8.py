"""The `fp8` setting: the frozen base's block matmuls in FP8, the adapter's training untouched.

torch runs FP8 matmuls on the CPU too, so the arithmetic is checked here on the tiny base; the
speed is a GPU matter (bench/gpu_train_speed.py --fp8)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainer.engine import train
from trainer.engine.batches import Batch, loss_of
from trainer.engine.config import TrainConfig
from trainer.engine.errors import ConfigError
from trainer.engine.flow import image_ids
from trainer.engine.fp8 import Fp8Linear, fp8_layers, fp8_support, quantized, use_fp8
from trainer.engine.lora import add_lora

from .conftest import RecordingHooks, train_config


def _adapted_tiny(tiny_base: Path) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    from diffusers import FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(tiny_base / "transformer")
    torch.manual_seed(0)
    params = add_lora(transformer, 4, 4.0, "full")
    with torch.no_grad():  # a trained-looking adapter, so its gradients flow through the base too
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    return transformer.train(), params


def _batch(transformer: torch.nn.Module) -> Batch:
    g = torch.Generator().manual_seed(1)
    config = transformer.config
    return Batch(torch.randn(1, 64, 64, generator=g), torch.randn(1, 64, 64, generator=g), torch.tensor([0.6]),
                 torch.randn(1, 12, config.joint_attention_dim, generator=g),
                 torch.randn(1, config.pooled_projection_dim, generator=g), image_ids(16, 16), torch.zeros(12, 3))  # fmt: skip


def test_per_tensor_fp8_keeps_each_value_within_its_format_precision() -> None:
    x = torch.randn(64, 48) * 30
    for dtype, bits in ((torch.float8_e4m3fn, 3), (torch.float8_e5m2, 2)):
        q, scale = quantized(x, dtype)
        back = q.float() * scale
        assert q.dtype == dtype and scale.dtype == torch.float32
        assert (back - x).abs().max() <= x.abs().max() * 2.0**-bits  # half an ulp of the largest, or better
        assert not torch.isnan(back).any()  # the largest value lands on the format's maximum, not past it


def test_fp8_swaps_the_blocks_frozen_linears_only(tiny_base: Path) -> None:
    transformer, params = _adapted_tiny(tiny_base)
    names = [name for name, _ in fp8_layers(transformer)]
    assert "transformer_blocks.0.attn.to_q.base_layer" in names and "single_transformer_blocks.0.proj_mlp.base_layer" in names
    assert not any(".norm" in n or "lora_" in n for n in names)  # modulation sees one vector; the adapter trains
    assert not any(n.startswith(("x_embedder", "context_embedder", "proj_out", "time_text_embed")) for n in names)
    before = sum(p.numel() for p in params)
    assert use_fp8(transformer) == len(names)
    swapped = dict(transformer.named_modules())
    assert all(isinstance(swapped[n], Fp8Linear) and swapped[n].weight.numel() == 0 for n in names)  # bf16 copy gone
    assert sum(p.numel() for p in transformer.parameters() if p.requires_grad) == before


def test_fp8_base_gives_the_adapter_nearly_the_same_loss_and_gradients(tiny_base: Path) -> None:
    transformer, params = _adapted_tiny(tiny_base)
    batch = _batch(transformer)
    exact = loss_of(transformer, batch, 1.0)
    exact.backward()
    exact_grad = torch.cat([p.grad.flatten() for p in params])
    transformer.zero_grad(set_to_none=True)
    use_fp8(transformer)
    approx = loss_of(transformer, batch, 1.0)
    approx.backward()
    approx_grad = torch.cat([p.grad.flatten() for p in params])
    assert approx.item() == pytest.approx(exact.item(), rel=2e-3)
    assert approx.item() != exact.item()  # the FP8 path really ran
    assert torch.nn.functional.cosine_similarity(exact_grad, approx_grad, dim=0) > 0.995
    assert approx_grad.norm() == pytest.approx(exact_grad.norm().item(), rel=0.02)


def test_a_run_with_fp8_learns_like_one_without(tiny_base: Path, dataset: Path, tmp_path: Path) -> None:
    hooks = RecordingHooks()
    settings = dict(steps=20, val_every=20, checkpoint_every=0, sample_prompts=[], flip=False)
    result = train(train_config(tiny_base, dataset, tmp_path / "fp8", fp8=True, **settings), hooks)
    plain = train(train_config(tiny_base, dataset, tmp_path / "plain", **settings), RecordingHooks())
    assert any("fp8: the matmuls of" in line for line in hooks.logs)
    (_, start), (_, end) = result.val_losses
    (_, plain_start), (_, plain_end) = plain.val_losses
    assert end < start * 0.97  # it learns
    assert end == pytest.approx(plain_end, rel=0.02) and start == pytest.approx(plain_start, rel=0.01)
    assert result.lora_path is not None and result.lora_path.is_file()


def test_fp8_is_refused_in_low_memory_mode_and_on_gpus_without_fp8(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="fp8 is a fast-mode setting"):
        TrainConfig.from_dict({"base": "tiny", "images_dir": "x", "output_dir": "y", "fp8": True,
                               "memory_mode": "low"}).resolve()  # fmt: skip
    assert fp8_support(torch.device("cpu")) == ""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    assert "A100-SXM4-80GB is 8.0" in fp8_support(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert fp8_support(torch.device("cuda")) == ""
