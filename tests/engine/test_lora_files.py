"""The saved files work outside the engine: plain diffusers loads them, kohya converts back."""

from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from trainer.engine import GenerateConfig, TrainResult, generate
from trainer.engine.kohya import drop_zero_parts, from_kohya

from .conftest import TRIGGER, RecordingHooks

PROMPT = f"a photo of {TRIGGER}"


def _pipeline_image(base: Path, lora_dir: Path | None, seed: int = 1) -> np.ndarray:
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(base)
    pipe.set_progress_bar_config(disable=True)
    if lora_dir is not None:
        pipe.load_lora_weights(lora_dir, weight_name="lora.safetensors")
    image = pipe(PROMPT, height=64, width=64, num_inference_steps=8, guidance_scale=3.5, max_sequence_length=32,
                 generator=torch.Generator().manual_seed(seed)).images[0]  # fmt: skip
    return np.asarray(image, dtype=np.int16)


def test_plain_diffusers_loads_the_lora_and_it_changes_the_output(
    trained: tuple[TrainResult, RecordingHooks], tiny_base: Path
) -> None:
    result, _ = trained
    without = _pipeline_image(tiny_base, None)
    with_lora = _pipeline_image(tiny_base, result.lora_path.parent)
    assert np.abs(with_lora - without).mean() > 2.0  # mean change in 0-255 levels


def test_engine_generate_matches_diffusers_for_the_same_seed(
    trained: tuple[TrainResult, RecordingHooks], tiny_base: Path
) -> None:
    result, _ = trained
    config = GenerateConfig(base=str(tiny_base), prompt=PROMPT, loras=[(str(result.lora_path.parent), 1.0)], seed=1,
                            device="cpu", num_images=2)  # fmt: skip
    steps: list[int] = []
    images = generate(config, on_step=lambda step, total: steps.append(step))
    assert len(images) == 2 and images[0].size == (64, 64)
    assert steps[-1] == 8
    expected = _pipeline_image(tiny_base, result.lora_path.parent, seed=1)
    assert np.abs(np.asarray(images[0], dtype=np.int16) - expected).max() <= 1
    assert np.abs(np.asarray(images[1], dtype=np.int16) - _pipeline_image(tiny_base, result.lora_path.parent, seed=2)).max() <= 1


def test_metadata_describes_the_lora(trained: tuple[TrainResult, RecordingHooks]) -> None:
    result, _ = trained
    with safe_open(str(result.lora_path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["flux_studio.trigger_word"] == TRIGGER
    assert metadata["flux_studio.rank"] == "4" and metadata["flux_studio.steps"] == "40"
    assert Path(metadata["flux_studio.base"]).is_dir()
    with safe_open(str(result.kohya_path), framework="pt") as handle:
        kohya = handle.metadata()
    assert kohya["modelspec.trigger_phrase"] == TRIGGER and kohya["modelspec.architecture"] == "flux-1-dev/lora"


def test_kohya_export_converts_back_to_the_same_weights(trained: tuple[TrainResult, RecordingHooks]) -> None:
    result, _ = trained
    ours = load_file(str(result.lora_path))
    kohya = load_file(str(result.kohya_path))
    assert any(k.startswith("lora_unet_double_blocks_0_img_attn_qkv.") for k in kohya)
    assert any(k.startswith("lora_unet_single_blocks_0_linear1.") for k in kohya)
    back = from_kohya(kohya)
    assert set(back) == set(ours)
    for key, value in ours.items():
        assert torch.equal(back[key], value), key


def test_diffusers_reads_the_kohya_layout_the_same_way(trained: tuple[TrainResult, RecordingHooks]) -> None:
    """diffusers' own kohya converter splits our fused layers back losslessly.

    Its converter hard-codes FLUX.1's full widths for the single blocks' `linear1`, so those keys
    are left out here (`from_kohya` above covers them at any width).
    """
    from diffusers import FluxPipeline

    result, _ = trained
    kohya = {k: v for k, v in load_file(str(result.kohya_path)).items() if "_linear1." not in k}
    converted = drop_zero_parts(FluxPipeline.lora_state_dict(kohya))
    ours = load_file(str(result.lora_path))
    assert converted
    for key, value in converted.items():
        assert torch.allclose(value, ours[key], atol=1e-7), key


def test_kohya_export_pads_parts_a_run_did_not_adapt() -> None:
    """Attention-only LoRAs leave proj_mlp out of the fused linear1: a zero block keeps it splittable."""
    from trainer.engine.kohya import to_kohya

    width, rank = 32, 2
    generator = torch.Generator().manual_seed(0)
    state = {}
    for part in ("attn.to_q", "attn.to_k", "attn.to_v"):
        state[f"transformer.single_transformer_blocks.0.{part}.lora_A.weight"] = torch.randn(rank, width, generator=generator)
        state[f"transformer.single_transformer_blocks.0.{part}.lora_B.weight"] = torch.randn(width, rank, generator=generator)
    kohya = to_kohya(state)
    assert kohya["lora_unet_single_blocks_0_linear1.lora_up.weight"].shape == (7 * width, 4 * rank)
    assert float(kohya["lora_unet_single_blocks_0_linear1.alpha"]) == 4 * rank
    back = drop_zero_parts(from_kohya(kohya))
    assert set(back) == set(state) and all(torch.equal(back[k], v) for k, v in state.items())
