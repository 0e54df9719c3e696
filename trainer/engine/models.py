"""Loading base pipelines (presets, hub ids, local folders) and choosing device and precision."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BaseModelLoadError, ConfigError
from .presets import BASE_PRESETS, base_source, looks_like_hub_id

if TYPE_CHECKING:
    import torch
    from diffusers import FluxPipeline

# What a diffusers FLUX folder must hold; checked before from_pretrained so the error names it.
REQUIRED_PARTS = ("model_index.json", "transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")


def resolve_device(device: str) -> "torch.device":
    """'auto' picks CUDA when present; asking for CUDA on a machine without it is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but no CUDA GPU is visible; use device='cpu' or 'auto'")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', not {device!r}")
    return torch.device(device)


def compute_dtype(device: "torch.device") -> "torch.dtype":
    """bf16 on CUDA (half the memory, tensor cores); fp32 on CPU, where bf16 is far slower."""
    import torch

    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_pipeline(
    base: str,
    device: "str | torch.device" = "cpu",
    dtype: "torch.dtype | None" = None,
    *,
    quantize: bool = False,
    token: str | None = None,
    with_transformer: bool = True,
) -> "FluxPipeline":
    """Load a FluxPipeline from a preset name, a local diffusers folder, or a hub id.

    `tiny` is built offline from configs. Everything else goes through diffusers'
    `from_pretrained`; its failures are turned into a `BaseModelLoadError` that says what to do.
    `quantize` loads the transformer in 4-bit NF4 (bitsandbytes, CUDA only) for the low-memory mode.
    `with_transformer=False` leaves `pipeline.transformer` None, to be loaded later with
    `load_transformer` (the low memory mode encodes the dataset first); `tiny` always has one.
    """
    import torch

    device = torch.device(device)
    dtype = dtype or compute_dtype(device)
    preset = BASE_PRESETS.get(base)
    if preset is not None and preset.source == "builtin:tiny":
        from .tiny import build_tiny_pipeline

        pipeline = build_tiny_pipeline()  # fp32 on the CPU; cast only when asked for another dtype
        return pipeline.to(device=device) if dtype == torch.float32 else pipeline.to(device=device, dtype=dtype)
    source = base_source(base)  # builtin:demo is shipped inside the package: trainer/engine/demo/weights
    if preset is None and Path(base).exists():
        _check_local_folder(Path(base))
    elif preset is None and not looks_like_hub_id(base):
        names = ", ".join(BASE_PRESETS)
        raise BaseModelLoadError(f"base {base!r} is not a preset ({names}), an existing folder, or a hub id 'org/name'")
    kwargs: dict[str, Any] = {"dtype": dtype, "token": token or os.environ.get("HF_TOKEN")}
    if not with_transformer:
        kwargs["transformer"] = None
    elif quantize:
        kwargs["transformer"] = _load_quantized_transformer(source, dtype, device, kwargs["token"])
    pipeline = _from_pretrained(source, kwargs)
    if not quantize:  # a quantized transformer is already placed by bitsandbytes
        pipeline.to(device)
    return pipeline


def load_transformer(
    base: str, device: "str | torch.device", dtype: "torch.dtype", *, quantize: bool = False, token: str | None = None
) -> Any:
    """The transformer of `base` alone, on `device` (4-bit NF4 with `quantize`), for a pipeline loaded without it."""
    import torch
    from diffusers import FluxTransformer2DModel

    device, token = torch.device(device), token or os.environ.get("HF_TOKEN")
    source = base_source(base)
    if quantize:
        return _load_quantized_transformer(source, dtype, device, token)
    try:
        return FluxTransformer2DModel.from_pretrained(source, subfolder="transformer", dtype=dtype, token=token).to(device)
    except Exception as error:
        raise BaseModelLoadError(_explain_load_failure(source, error, token)) from error


def _check_local_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise BaseModelLoadError(f"{folder} is a file; give the diffusers folder that holds model_index.json")
    missing = [part for part in REQUIRED_PARTS if not (folder / part).exists()]
    if missing:
        raise BaseModelLoadError(
            f"{folder} is not a complete diffusers FLUX folder: missing {', '.join(missing)}. "
            "Download the whole repository (e.g. `hf download black-forest-labs/FLUX.1-dev --local-dir DIR`)."
        )


def _from_pretrained(source: str, kwargs: dict[str, Any]) -> "FluxPipeline":
    from diffusers import FluxPipeline

    try:
        return FluxPipeline.from_pretrained(source, **kwargs)
    except Exception as error:  # translate the hub's many error types into one actionable message
        raise BaseModelLoadError(_explain_load_failure(source, error, kwargs.get("token"))) from error


def _explain_load_failure(source: str, error: Exception, token: str | None) -> str:
    from huggingface_hub import get_token

    from .hub_errors import explain_load_failure

    return explain_load_failure(source, error, has_token=bool(token or get_token()))


def _load_quantized_transformer(source: str, dtype: "torch.dtype", device: "torch.device", token: str | None) -> Any:
    """The transformer in 4-bit NF4 via bitsandbytes; a clear error where that is impossible."""
    if device.type != "cuda":
        raise ConfigError("4-bit quantization of the base needs a CUDA GPU; it is skipped on the CPU")
    try:
        from diffusers import BitsAndBytesConfig, FluxTransformer2DModel
        import bitsandbytes  # noqa: F401  (only to know it is installed)
    except ImportError as error:
        raise ConfigError("4-bit quantization needs the bitsandbytes package on the worker") from error
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    try:
        return FluxTransformer2DModel.from_pretrained(
            source, subfolder="transformer", quantization_config=config, dtype=dtype, token=token
        )
    except Exception as error:
        raise BaseModelLoadError(_explain_load_failure(source, error, token)) from error


def can_quantize(device: "torch.device") -> bool:
    """Whether `load_pipeline(quantize=True)` can work here (CUDA and bitsandbytes)."""
    if device.type != "cuda":
        return False
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True
