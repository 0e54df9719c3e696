"""Export to the kohya / ComfyUI LoRA layout, and read it back.

kohya names modules after Black Forest Labs' original FLUX code, where a double block's q, k and
v are one linear layer (`img_attn_qkv`) and a single block's q, k, v and MLP input are one more
(`linear1`). Separate LoRAs on the parts become one LoRA on the fused layer exactly: stack the
down matrices and place the up matrices on the block diagonal. A part a run did not adapt gets a
zero block, so every fused layer splits back evenly. diffusers' own converter recognises that
block-diagonal shape and splits it losslessly; `from_kohya` does the same for any model width.
"""

from __future__ import annotations

import torch

PREFIX = "transformer."
MLP_RATIO = 4  # FLUX single blocks: proj_mlp is 4x the model width

# (diffusers suffix parts inside a double block, kohya name) — several parts means a fused layer.
DOUBLE_LAYOUT = (
    (("attn.to_q", "attn.to_k", "attn.to_v"), "img_attn_qkv"),
    (("attn.to_out.0",), "img_attn_proj"),
    (("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "txt_attn_qkv"),
    (("attn.to_add_out",), "txt_attn_proj"),
    (("ff.net.0.proj",), "img_mlp_0"),
    (("ff.net.2",), "img_mlp_2"),
    (("ff_context.net.0.proj",), "txt_mlp_0"),
    (("ff_context.net.2",), "txt_mlp_2"),
)
SINGLE_LAYOUT = (
    (("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "linear1"),
    (("proj_out",), "linear2"),
)


def _layouts(state: dict[str, torch.Tensor]) -> list[tuple[list[str], str]]:
    """Every (diffusers module names, kohya name) pair for the blocks present in `state`."""
    def count(kind: str) -> int:
        indices = {int(k.split(".")[2]) for k in state if k.startswith(f"{PREFIX}{kind}.")}
        return max(indices) + 1 if indices else 0

    pairs = []
    for i in range(count("transformer_blocks")):
        for parts, name in DOUBLE_LAYOUT:
            pairs.append(([f"{PREFIX}transformer_blocks.{i}.{p}" for p in parts], f"lora_unet_double_blocks_{i}_{name}"))
    for i in range(count("single_transformer_blocks")):
        for parts, name in SINGLE_LAYOUT:
            pairs.append(([f"{PREFIX}single_transformer_blocks.{i}.{p}" for p in parts], f"lora_unet_single_blocks_{i}_{name}"))
    return pairs


def to_kohya(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Diffusers-layout LoRA weights (scale already folded in) to kohya keys with alphas."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for modules, name in _layouts(state):
        present = [m for m in modules if f"{m}.lora_A.weight" in state]
        if not present:
            continue
        ref_down, ref_up = state[f"{present[0]}.lora_A.weight"], state[f"{present[0]}.lora_B.weight"]
        downs, ups = [], []
        for module in modules:
            if module in present:
                downs.append(state[f"{module}.lora_A.weight"])
                ups.append(state[f"{module}.lora_B.weight"])
                used.update({f"{module}.lora_A.weight", f"{module}.lora_B.weight"})
            else:  # an unadapted part: zero rows, so the fused layer still splits evenly
                downs.append(torch.zeros_like(ref_down))
                out_features = ref_up.shape[0] * (MLP_RATIO if module.endswith("proj_mlp") else 1)
                ups.append(ref_up.new_zeros(out_features, ref_up.shape[1]))
        down, up = torch.cat(downs), torch.block_diag(*ups)
        out[f"{name}.lora_down.weight"] = down.contiguous()
        out[f"{name}.lora_up.weight"] = up.contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(down.shape[0]))  # alpha = rank: scale 1, as folded
    leftover = sorted(set(state) - used)
    if leftover:
        raise ValueError(f"no kohya name for {leftover[0]}")
    return out


def from_kohya(kohya: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `to_kohya` (alphas folded into lora_B), for any model width."""
    blocks = {k.split(".")[0] for k in kohya if k.endswith(".lora_down.weight")}
    names = {}
    for kind, layout in (("double", DOUBLE_LAYOUT), ("single", SINGLE_LAYOUT)):
        block_name = "transformer_blocks" if kind == "double" else "single_transformer_blocks"
        for key in blocks:
            for parts, suffix in layout:
                head = f"lora_unet_{kind}_blocks_"
                if key.startswith(head) and key.endswith(f"_{suffix}"):
                    index = key[len(head) : -len(suffix) - 1]
                    if index.isdigit():
                        names[key] = [f"{PREFIX}{block_name}.{index}.{p}" for p in parts]
    out: dict[str, torch.Tensor] = {}
    for key, modules in names.items():
        down, up = kohya[f"{key}.lora_down.weight"], kohya[f"{key}.lora_up.weight"]
        alpha = float(kohya.get(f"{key}.alpha", torch.tensor(float(down.shape[0]))))
        up = up * (alpha / down.shape[0])
        rank = down.shape[0] // len(modules)
        rows = _split_rows(up.shape[0], modules)
        start = 0
        for j, (module, height) in enumerate(zip(modules, rows)):
            out[f"{module}.lora_A.weight"] = down[j * rank : (j + 1) * rank].contiguous()
            out[f"{module}.lora_B.weight"] = up[start : start + height, j * rank : (j + 1) * rank].contiguous()
            start += height
    return out


def _split_rows(total: int, modules: list[str]) -> list[int]:
    """Output sizes of the fused parts: equal for q/k/v; with proj_mlp, width * (3 + MLP_RATIO)."""
    if modules[-1].endswith("proj_mlp"):
        width = total // (3 + MLP_RATIO)
        return [width, width, width, total - 3 * width]
    return [total // len(modules)] * len(modules)


def drop_zero_parts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove adapters whose weights are all zero (the padding `to_kohya` added)."""
    modules = {k.rsplit(".lora_", 1)[0] for k in state}
    keep = {m for m in modules if torch.count_nonzero(state[f"{m}.lora_B.weight"]) or torch.count_nonzero(state[f"{m}.lora_A.weight"])}
    return {k: v for k, v in state.items() if k.rsplit(".lora_", 1)[0] in keep}
