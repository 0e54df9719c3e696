"""The training loop's precision settings (trainer/engine/precision.py).

On CUDA the base is bf16 and the adapter fp32. Those runs are checked here with a bf16 base on
the CPU, which takes the same code path; the GPU figures are in the README.
"""

from __future__ import annotations

import torch

from trainer.engine import build_tiny_pipeline
from trainer.engine.batches import Batch, loss_of
from trainer.engine.flow import image_ids
from trainer.engine.lora import add_lora
from trainer.engine.precision import training_precision


def _bf16_transformer_with_adapter() -> tuple[torch.nn.Module, list[torch.nn.Parameter]]:
    transformer = build_tiny_pipeline().transformer.to(torch.bfloat16).requires_grad_(False)
    params = add_lora(transformer, 4, 4.0, "full")
    transformer.train()
    return transformer, params


def _batch(transformer: torch.nn.Module) -> Batch:
    generator = torch.Generator().manual_seed(0)
    config = transformer.config
    noisy = torch.randn(1, 16, 64, generator=generator)
    text = torch.randn(1, 8, config.joint_attention_dim, generator=generator)
    pooled = torch.randn(1, config.pooled_projection_dim, generator=generator)
    return Batch(noisy, torch.randn(1, 16, 64, generator=generator), torch.tensor([0.5]), text, pooled,
                 image_ids(8, 8), torch.zeros(8, 3)).to(torch.device("cpu"), torch.bfloat16)  # fmt: skip


def test_a_bf16_base_trains_its_fp32_adapter_with_bf16_matmuls() -> None:
    transformer, params = _bf16_transformer_with_adapter()
    seen: list[torch.dtype] = []
    lora_a = next(m for name, m in transformer.named_modules() if name.endswith("to_q.lora_A.default"))
    lora_a.register_forward_hook(lambda module, args, out: seen.append(out.dtype))

    with training_precision(transformer, torch.device("cpu"), torch.bfloat16):
        loss = loss_of(transformer, _batch(transformer), 3.5)
        loss.backward()
    assert seen == [torch.bfloat16]  # the adapter's matmul ran in bf16, not up-cast to fp32
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32 for p in params)
    assert any(p.grad.abs().sum() > 0 for p in params)

    seen.clear()  # outside the context peft's own up-cast is back
    with torch.no_grad():
        loss_of(transformer, _batch(transformer), 3.5)
    assert seen == [torch.float32]


def test_fp32_training_on_the_cpu_is_left_exactly_as_it_was() -> None:
    transformer = build_tiny_pipeline().transformer.requires_grad_(False)
    add_lora(transformer, 4, 4.0, "full")
    batch = _batch(transformer).to(torch.device("cpu"), torch.float32)
    with torch.no_grad():
        plain = loss_of(transformer, batch, 3.5)
        with training_precision(transformer, torch.device("cpu"), torch.float32):
            wrapped = loss_of(transformer, batch, 3.5)
            assert torch.backends.cuda.cudnn_sdp_enabled()  # attention backends untouched off CUDA
    assert torch.equal(plain, wrapped)


def test_on_cuda_the_cudnn_attention_backend_is_off_during_training_only() -> None:
    transformer = build_tiny_pipeline().transformer
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with training_precision(transformer, torch.device("cuda"), torch.float32):  # flags only: no GPU needed
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_every_step_inside_one_precision_block_sees_the_adapter_as_the_optimizer_left_it() -> None:
    """The engine enters `training_precision` once for the whole loop: each forward must use the
    adapter's current weights, not bf16 copies cached at the first step."""
    transformer, params = _bf16_transformer_with_adapter()
    batch = _batch(transformer)
    optimizer = torch.optim.SGD(params, lr=0.5)
    losses = []
    with training_precision(transformer, torch.device("cpu"), torch.bfloat16):
        for _ in range(3):
            loss = loss_of(transformer, batch, 3.5)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        with torch.no_grad():
            inside = loss_of(transformer, batch, 3.5).item()
    with torch.no_grad():  # a fresh context: no cache could be involved
        with training_precision(transformer, torch.device("cpu"), torch.bfloat16):
            fresh = loss_of(transformer, batch, 3.5).item()
    assert losses[0] != losses[1] != losses[2]  # the updates reached the forward
    assert losses[2] < losses[0]
    assert inside == fresh


def test_mixed_precision_leaves_the_base_in_bf16() -> None:
    """Only the adapter's matmuls change: the base's norms and modulations stay bf16, as in
    inference (autocast would run them in fp32, holding fp32 activations for the backward)."""
    transformer, _ = _bf16_transformer_with_adapter()
    seen: list[torch.dtype] = []
    norm = next(m for m in transformer.modules() if isinstance(m, torch.nn.LayerNorm))
    autocast: list[bool] = []

    def record(module: torch.nn.Module, args: object, out: torch.Tensor) -> None:
        seen.append(out.dtype)
        autocast.append(torch.is_autocast_enabled("cpu"))

    norm.register_forward_hook(record)
    with training_precision(transformer, torch.device("cpu"), torch.bfloat16):
        loss_of(transformer, _batch(transformer), 3.5).backward()
    assert seen and set(seen) == {torch.bfloat16}
    assert not any(autocast)  # CUDA's autocast would run LayerNorm in fp32: no autocast around the base
    assert all(type(m) is torch.nn.Linear for name, m in transformer.named_modules() if name.endswith("lora_A.default"))
