"""The frozen base's matmuls in FP8 (the `fp8` setting): twice the tensor-core rate of bf16 on
GPUs that have FP8 (compute capability 8.9 and up: L4, L40, RTX 40, H100, H200).

A LoRA run never updates the base, so each of its linear layers does two matmuls a step: the
forward `x @ W.T` and the backward's `grad @ W` (the input's gradient; W gets none). Both go
through `torch._scaled_mm` with per-tensor scales: the weight is quantized once to e4m3 (kept
twice, as W and W.T, since FP8 matmuls take only a row-major left and column-major right operand;
together the size of the bf16 weight it replaces), the activations to e4m3 and the gradients to
e5m2 (more range, less precision, as gradients need) at each call. The adapter's own matmuls, the
attention, norms and everything else keep their precision, so what trains (the LoRA, in fp32 with
bf16 matmuls) is untouched; only the base's outputs carry FP8 rounding, about 2-3 significant bits
less than bf16's.

Layers swapped: every frozen `nn.Linear` in the double and single blocks whose sides are
multiples of 16 (an FP8 matmul needs that), adapted (peft's `base_layer`) or not, except the
modulation layers (`norm*.linear`), which see one vector per image, not its tokens. The embedders
and the final projection stay as they are.

On a CPU the same code runs (torch has an FP8 matmul there too), slowly: tests use it to check
the arithmetic, not the speed.
"""

from __future__ import annotations

import torch

E4M3 = torch.float8_e4m3fn  # weights and activations
E5M2 = torch.float8_e5m2  # gradients
BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")


def fp8_support(device: torch.device) -> str:
    """Why this device cannot run FP8 matmuls fast, or "" when it can (or is the CPU, for tests)."""
    if device.type != "cuda":
        return ""
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) >= (8, 9):
        return ""
    name = torch.cuda.get_device_name(device)
    return (f"fp8 needs a GPU with FP8 tensor cores (compute capability 8.9 or newer: L4, L40, RTX 40 series, H100, "
            f"H200); {name} is {major}.{minor}. Turn fp8 off.")  # fmt: skip


def quantized(tensor: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """`tensor` in FP8 with one fp32 scale for all of it: tensor ≈ q.float() * scale.

    Two passes over the tensor in its own dtype (no fp32 copy of a bf16 activation): the largest
    magnitude (one reduction), then scale, clamp and cast. The multiplier is rounded to the
    tensor's dtype first and the scale derived from that rounded value, so both agree exactly."""
    largest = torch.finfo(dtype).max
    amax = torch.linalg.vector_norm(tensor.detach(), ord=float("inf")).float()
    multiplier = (largest / torch.clamp(amax, min=1e-12)).to(tensor.dtype)
    q = (tensor * multiplier).clamp(-largest, largest).to(dtype)  # out of range would be NaN in e4m3fn
    return q, 1.0 / multiplier.float()


class _Fp8Matmul(torch.autograd.Function):
    """y = x @ W.T + b with W frozen: FP8 forward and FP8 input gradient."""

    @staticmethod
    def forward(ctx, x, weight, weight_t, weight_scale, bias):  # type: ignore[no-untyped-def]
        rows = x.reshape(-1, x.shape[-1])
        q, scale = quantized(rows, E4M3)
        out = torch._scaled_mm(q.contiguous(), weight.t(), scale_a=scale, scale_b=weight_scale, out_dtype=x.dtype)
        if bias is not None:
            out = out + bias.to(out.dtype)
        ctx.save_for_backward(weight_t, weight_scale)
        ctx.in_shape = x.shape
        return out.reshape(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        weight_t, weight_scale = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])
        q, scale = quantized(rows, E5M2)
        grad_x = torch._scaled_mm(q.contiguous(), weight_t.t(), scale_a=scale, scale_b=weight_scale, out_dtype=grad.dtype)
        return grad_x.reshape(ctx.in_shape), None, None, None, None


class Fp8Linear(torch.nn.Linear):
    """A frozen linear layer whose matmuls run in FP8 (see the module docstring).

    Its `weight` is an empty placeholder (the FP8 copies replace it); the bias stays as it was."""

    weight_fp8: torch.Tensor
    weight_t_fp8: torch.Tensor
    weight_scale: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Fp8Matmul.apply(x, self.weight_fp8, self.weight_t_fp8, self.weight_scale, self.bias)


def _convert(layer: torch.nn.Linear) -> None:
    weight = layer.weight.detach()
    q, scale = quantized(weight, E4M3)
    layer.register_buffer("weight_fp8", q, persistent=False)
    layer.register_buffer("weight_t_fp8", q.t().contiguous(), persistent=False)
    layer.register_buffer("weight_scale", scale, persistent=False)
    layer.weight = torch.nn.Parameter(weight.new_empty(0), requires_grad=False)  # the bf16 copy's memory goes back
    layer.__class__ = Fp8Linear


def fp8_layers(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    """The layers `use_fp8` swaps (see the module docstring), by name."""
    found = []
    for name, module in transformer.named_modules():
        if type(module) is not torch.nn.Linear or not name.startswith(BLOCKS) or module.weight.requires_grad:
            continue  # only frozen plain layers of the blocks; LoRA's own matrices train
        if ".norm" in name or module.in_features % 16 or module.out_features % 16:
            continue
        found.append((name, module))
    return found


@torch.no_grad()
def use_fp8(transformer: torch.nn.Module) -> int:
    """Swap the base's block linears to FP8, in place, for good (the run's transformer is not
    reused); returns how many. Call after the adapter is added and the model is on its device."""
    layers = fp8_layers(transformer)
    for _, layer in layers:
        _convert(layer)
    return len(layers)
