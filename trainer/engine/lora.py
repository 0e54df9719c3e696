"""LoRA adapters on the FLUX transformer (through peft) and the files they are saved as.

Two files come out of a run:
- `lora.safetensors`, diffusers layout (`transformer.<module>.lora_A/B.weight`), which
  `FluxPipeline.load_lora_weights` reads as is. The alpha/rank scale is folded into lora_B, so a
  loader that ignores alphas (and most do for this layout) still gets the trained function.
- `lora_kohya.safetensors`, the kohya / ComfyUI layout named after the original FLUX modules,
  where q, k and v (and the single blocks' MLP input) are one fused linear layer. See `kohya.py`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import ConfigError

# Linear layers adapted in each block kind. "attention" trains only the first groups.
DOUBLE_ATTENTION = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")  # fmt: skip
DOUBLE_FEED_FORWARD = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2")
SINGLE_ATTENTION = ("attn.to_q", "attn.to_k", "attn.to_v")
SINGLE_MLP = ("proj_mlp", "proj_out")
PREFIX = "transformer."


def target_modules(transformer: torch.nn.Module, targets: str) -> list[str]:
    """Full module names to adapt. Spelled out so the top-level `proj_out` is never caught by a suffix."""
    double = DOUBLE_ATTENTION + (DOUBLE_FEED_FORWARD if targets == "full" else ())
    single = SINGLE_ATTENTION + (SINGLE_MLP if targets == "full" else ())
    names = []
    for i in range(len(transformer.transformer_blocks)):
        names += [f"transformer_blocks.{i}.{suffix}" for suffix in double]
    for i in range(len(transformer.single_transformer_blocks)):
        names += [f"single_transformer_blocks.{i}.{suffix}" for suffix in single]
    return names


def add_lora(transformer: torch.nn.Module, rank: int, alpha: float, targets: str) -> list[torch.nn.Parameter]:
    """Inject a fresh adapter and return its parameters (kept in fp32 for stable updates)."""
    from peft import LoraConfig

    config = LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=target_modules(transformer, targets)
    )
    transformer.add_adapter(config)  # diffusers' PeftAdapterMixin: the model keeps its class
    params = [p for p in transformer.parameters() if p.requires_grad]
    for param in params:
        param.data = param.data.float()
    return params


def raw_state_dict(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's weights as peft names them (no prefix, no folded scale): what checkpoints keep."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(transformer).items()}


def load_raw_state_dict(transformer: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put checkpointed adapter weights back, failing loudly if any are missing or extra."""
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(transformer, state)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ConfigError(f"LoRA weights do not fit this network (missing {missing[:2]}, extra {result.unexpected_keys[:2]})")


def folded(state: dict[str, torch.Tensor], scale: float, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Diffusers-layout weights with the alpha/rank scale folded into lora_B."""
    out = {}
    for key, value in state.items():
        value = value.float() * scale if ".lora_B." in key else value.float()
        out[PREFIX + key] = value.to(dtype).contiguous()
    return out


def save_lora(path: Path, state: dict[str, torch.Tensor], scale: float, dtype: torch.dtype, info: dict[str, Any]) -> Path:
    """Write a diffusers-format LoRA with our description in the safetensors metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", **{f"flux_studio.{k}": str(v) for k, v in info.items()}}
    save_file(folded(state, scale, dtype), str(path), metadata=metadata)
    return path


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A LoRA file in diffusers layout (kohya files are converted by diffusers) and its metadata."""
    from diffusers import FluxPipeline

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"LoRA file {path} does not exist")
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
    try:
        state, alphas = FluxPipeline.lora_state_dict(str(path), return_alphas=True)
    except Exception as error:  # diffusers raises plain ValueError/KeyError on foreign layouts
        raise ConfigError(f"{path.name} is not a FLUX LoRA diffusers can read: {error}") from error
    # As diffusers' load_lora_weights decides: the adapter metadata if the file has it, else the
    # per-module `.alpha` tensors (diffusers' lora_state_dict takes them out of the state).
    if "lora_adapter_metadata" in metadata:
        _fold_adapter_metadata(state, json.loads(metadata["lora_adapter_metadata"]))
    elif alphas:
        _fold_alphas(state, alphas)
    return state, metadata


def _fold_alphas(state: dict[str, torch.Tensor], alphas: dict[str, torch.Tensor]) -> None:
    """Files that keep a `<module>.alpha` tensor beside each adapter (peft-style files from other
    trainers) scale that module by alpha / rank at inference; fold it into lora_B like ours."""
    for key, alpha in alphas.items():
        module = key.removesuffix(".alpha")
        down, up = state.get(f"{module}.lora_A.weight"), f"{module}.lora_B.weight"
        if down is not None and up in state:
            state[up] = state[up] * (float(alpha) / down.shape[0])


def _fold_adapter_metadata(state: dict[str, torch.Tensor], adapter: dict[str, Any]) -> None:
    """Files saved by diffusers' own trainers may keep alpha apart; fold it like ours."""
    rank, alpha = adapter.get("transformer.r"), adapter.get("transformer.lora_alpha")
    if rank and alpha and alpha != rank:
        for key in state:
            if ".lora_B." in key:
                state[key] = state[key] * (alpha / rank)


def diffusers_rank(state: dict[str, torch.Tensor]) -> int:
    """The rank of the transformer adapters in a diffusers-layout state dict."""
    ranks = {v.shape[0] for k, v in state.items() if k.startswith(PREFIX) and ".lora_A." in k}
    if not ranks:
        raise ConfigError("the LoRA file holds no transformer LoRA weights")
    if len(ranks) > 1:
        raise ConfigError(f"the LoRA file mixes ranks {sorted(ranks)}; continue training needs one rank")
    return ranks.pop()


def modules_outside(state: dict[str, torch.Tensor], targets: str) -> list[str]:
    """The modules a diffusers-layout LoRA adapts that a run with `targets` does not (sorted)."""
    allowed = {
        "transformer_blocks": set(DOUBLE_ATTENTION + (DOUBLE_FEED_FORWARD if targets == "full" else ())),
        "single_transformer_blocks": set(SINGLE_ATTENTION + (SINGLE_MLP if targets == "full" else ())),
    }
    outside = set()
    for key in state:
        if ".lora_A." in key and not key.startswith(PREFIX):  # a text encoder's adapter: never trained here
            outside.add(key.split(".lora_A.")[0])
        elif key.startswith(PREFIX) and ".lora_A." in key:
            module = key[len(PREFIX) :].split(".lora_A.")[0]
            match = re.fullmatch(r"(transformer_blocks|single_transformer_blocks)\.\d+\.(.+)", module)
            if not match or match.group(2) not in allowed[match.group(1)]:
                outside.add(module)
    return sorted(outside)


def start_from(transformer: torch.nn.Module, state: dict[str, torch.Tensor], alpha: float) -> None:
    """Load an existing LoRA (diffusers layout, scale folded in) into the fresh adapter.

    Dividing lora_B by this run's alpha/rank makes the adapter compute exactly what the file did.
    Modules the file does not adapt keep their fresh initialisation (lora_B = 0: no change).
    """
    scale = alpha / diffusers_rank(state)
    ours = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    ours = {k: (v.float() / scale if ".lora_B." in k else v.float()) for k, v in ours.items()}
    live = raw_state_dict(transformer)
    unknown = sorted(set(ours) - set(live))
    if unknown:
        raise ConfigError(f"the LoRA file adapts modules outside this run's targets, e.g. {unknown[0]}")
    live.update(ours)
    load_raw_state_dict(transformer, live)

