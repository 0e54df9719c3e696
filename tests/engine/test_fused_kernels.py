"""Eager training steps run the adapter as fused LoRA matmuls and the attention with a one-operation
rotary embedding; both compute what peft's layers and diffusers' processor compute."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from trainer.engine import train
from trainer.engine import training as training_module
from trainer.engine.batches import Batch, loss_of, predict
from trainer.engine.eager_attention import EagerFluxAttention, eager_attention
from trainer.engine.flow import image_ids
from trainer.engine.fused_lora import FusedGroup, fused_adapters
from trainer.engine.lora import add_lora, raw_state_dict
from trainer.engine.precision import training_precision

from .conftest import RecordingHooks, train_config


def _adapted(tiny_base: Path, alpha: float = 8.0) -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    from diffusers import FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(tiny_base / "transformer")
    transformer.requires_grad_(False)
    torch.manual_seed(0)
    params = add_lora(transformer, 4, alpha, "full")  # scale alpha/rank = 2: the scale is exercised
    with torch.no_grad():  # a trained-looking adapter, so every adapter matrix gets a gradient
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return transformer.train(), params


def _batch(transformer: torch.nn.Module, height: int = 16, width: int = 16, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    config, tokens = transformer.config, height * width // 4
    return Batch(torch.randn(2, tokens, 64, generator=g), torch.randn(2, tokens, 64, generator=g), torch.tensor([0.6, 0.2]),
                 torch.randn(2, 12, config.joint_attention_dim, generator=g),
                 torch.randn(2, config.pooled_projection_dim, generator=g), image_ids(height, width),
                 torch.zeros(12, 3))  # fmt: skip


def _loss_and_grads(transformer: torch.nn.Module, params: list[torch.nn.Parameter], batch: Batch) -> tuple[float, list[torch.Tensor]]:
    for param in params:
        param.grad = None
    loss = loss_of(transformer, batch, 1.0)
    loss.backward()
    return loss.item(), [param.grad.clone() for param in params]


def _assert_close(expected: list[torch.Tensor], got: list[torch.Tensor], rtol: float) -> None:
    for want, have in zip(expected, got, strict=True):
        assert have.dtype == want.dtype and have.shape == want.shape
        assert (have - want).abs().max() <= rtol * want.abs().max() + 1e-12


def test_fused_adapter_layers_give_peft_s_loss_and_gradients(tiny_base: Path) -> None:
    transformer, params = _adapted(tiny_base)
    batch = _batch(transformer)
    loss, grads = _loss_and_grads(transformer, params, batch)
    before = raw_state_dict(transformer)

    with fused_adapters(transformer) as count:
        from peft.tuners.lora import LoraLayer

        assert count == sum(isinstance(module, LoraLayer) for module in transformer.modules()) == 12 * len(transformer.transformer_blocks) + 5 * len(transformer.single_transformer_blocks)
        attn = transformer.transformer_blocks[0].attn
        assert attn.fused_projections and isinstance(attn.to_qkv, FusedGroup) and isinstance(attn.to_added_qkv, FusedGroup)
        assert isinstance(transformer.single_transformer_blocks[0].attn.to_qkv, FusedGroup)
        fused_loss, fused_grads = _loss_and_grads(transformer, params, batch)

    assert fused_loss == pytest.approx(loss, rel=1e-5)
    _assert_close(grads, fused_grads, rtol=1e-5)
    # everything is as it was: peft's layers, separate projections, the same adapter weights
    assert not attn.fused_projections and not hasattr(attn, "to_qkv")
    assert type(attn.to_q).__name__ == "Linear" and type(attn.to_q).__module__.startswith("peft")
    after = raw_state_dict(transformer)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert _loss_and_grads(transformer, params, batch)[0] == loss


def test_fused_layers_fall_back_to_peft_when_the_adapter_is_switched_off(tiny_base: Path) -> None:
    transformer, _ = _adapted(tiny_base)
    batch = _batch(transformer)
    with torch.no_grad():
        adapted = predict(transformer, batch, 1.0)
        transformer.disable_adapters()
        plain = predict(transformer, batch, 1.0)
        transformer.enable_adapters()
        with fused_adapters(transformer):
            assert isinstance(transformer.transformer_blocks[0].attn.to_qkv, FusedGroup)
            fused_adapted = predict(transformer, batch, 1.0)
            transformer.disable_adapters()  # the groups and the single layers switch back to peft's forward
            fused_plain = predict(transformer, batch, 1.0)
            transformer.enable_adapters()
    assert not torch.allclose(adapted, plain, atol=1e-4)  # the adapter matters, so the check means something
    torch.testing.assert_close(fused_plain, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused_adapted, adapted, rtol=1e-5, atol=1e-5)


def test_fused_layers_keep_the_mixed_precision_arrangement(tiny_base: Path) -> None:
    """bf16 base, fp32 adapter: the fused matmuls run in bf16 and hand fp32 gradients back, as
    close to the exact (fp64) gradients as peft's own bf16 path is."""
    reference, ref_params = _adapted(tiny_base)
    reference.to(torch.float64)
    batch = _batch(reference)
    _, exact = _loss_and_grads(reference, ref_params, batch.to(torch.device("cpu"), torch.float64))

    transformer, params = _adapted(tiny_base)
    transformer.to(torch.bfloat16)
    for param in params:
        param.data = param.data.float()
    half = batch.to(torch.device("cpu"), torch.bfloat16)
    with training_precision(transformer, torch.device("cpu"), torch.bfloat16):
        _, peft_grads = _loss_and_grads(transformer, params, half)
        with fused_adapters(transformer):
            _, fused_grads = _loss_and_grads(transformer, params, half)

    def error(grads: list[torch.Tensor]) -> float:
        return max(((g.double() - e).norm() / e.norm()).item() for g, e in zip(grads, exact, strict=True))

    assert all(g.dtype == torch.float32 for g in fused_grads)
    assert error(fused_grads) < 0.05 and error(fused_grads) < 2 * error(peft_grads)


def test_fused_layers_work_under_gradient_checkpointing(tiny_base: Path) -> None:
    transformer, params = _adapted(tiny_base)
    batch = _batch(transformer)
    with fused_adapters(transformer), eager_attention(transformer):
        loss, grads = _loss_and_grads(transformer, params, batch)
        transformer.enable_gradient_checkpointing()
        checkpointed_loss, checkpointed_grads = _loss_and_grads(transformer, params, batch)
    assert checkpointed_loss == pytest.approx(loss, rel=1e-6)
    _assert_close(grads, checkpointed_grads, rtol=1e-5)


def test_compiled_steps_keep_peft_s_layers_and_diffusers_attention(tiny_base: Path) -> None:
    transformer, _ = _adapted(tiny_base)
    logs: list[str] = []
    with training_module.eager_kernels(transformer, compiled=True, log=logs.append):
        attn = transformer.transformer_blocks[0].attn
        assert not attn.fused_projections and type(attn.processor).__name__ == "FluxAttnProcessor"
        assert type(attn.to_q).__name__ == "Linear" and not logs
    with training_module.eager_kernels(transformer, compiled=False, log=logs.append):
        assert attn.fused_projections and isinstance(attn.processor, EagerFluxAttention)
        assert type(attn.to_q).__name__ == "FusedLinear"
    assert logs == [f"adapter: {12 * len(transformer.transformer_blocks) + 5 * len(transformer.single_transformer_blocks)} layers train through fused LoRA matmuls"]


def test_eager_attention_computes_diffusers_attention(tiny_base: Path) -> None:
    transformer, params = _adapted(tiny_base)
    square, wide = _batch(transformer), _batch(transformer, 8, 32, seed=2)  # same token count, other positions
    loss, grads = _loss_and_grads(transformer, params, square)
    with torch.no_grad():
        wide_expected = predict(transformer, wide, 1.0)

    with eager_attention(transformer) as switched:
        assert switched == len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
        assert isinstance(transformer.single_transformer_blocks[0].attn.processor, EagerFluxAttention)
        eager_loss, eager_grads = _loss_and_grads(transformer, params, square)
        with torch.no_grad():  # a new image layout of the same size: the rotary factors follow it
            wide_got = predict(transformer, wide, 1.0)

    assert eager_loss == pytest.approx(loss, rel=1e-6)
    _assert_close(grads, eager_grads, rtol=1e-5)
    torch.testing.assert_close(wide_got, wide_expected, rtol=1e-5, atol=1e-6)
    assert type(transformer.transformer_blocks[0].attn.processor).__name__ == "FluxAttnProcessor"


def test_an_eager_run_trains_through_the_fused_path_and_learns_what_peft_would(
    tiny_base: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dict(steps=4, val_every=0, checkpoint_every=0, sample_every=0, sample_prompts=[], caption_dropout=0.0)
    hooks = RecordingHooks()
    fused = train(train_config(tiny_base, dataset, tmp_path / "fused", **settings), hooks)
    assert any("fused LoRA matmuls" in line for line in hooks.logs)

    monkeypatch.setattr(training_module, "eager_kernels", lambda transformer, compiled, log: contextlib.nullcontext())
    plain = train(train_config(tiny_base, dataset, tmp_path / "plain", **settings), RecordingHooks())
    assert fused.losses == pytest.approx(plain.losses, rel=1e-4)
