"""gallery.inference on the tiny base: the cache keeps the base, swaps LoRAs, matches diffusers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gallery.inference import GenerationRequest, LoraSpec, RequestError
from tests.gallery.conftest import PROMPT

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from trainer.engine.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="module")
def cache(tiny_folder: Path):
    from gallery.inference.cache import PipelineCache

    return PipelineCache(device="cpu")  # the default loader: engine.load_pipeline -> from_pretrained


def request_for(base: Path, *loras: LoraSpec, seed: int = 3) -> GenerationRequest:
    return GenerationRequest(base=str(base), prompt=PROMPT, seed=seed, steps=3, guidance=3.5, width=64, height=64,
                             max_sequence_length=32, loras=tuple(loras))


def plain_diffusers(folder: Path, loras: list[tuple[Path, float]], seed: int = 3) -> np.ndarray:
    """What someone gets from diffusers alone with the same files and seed."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    for i, (path, _) in enumerate(loras):
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=f"l{i}")
    if len(loras) > 1 or (loras and loras[0][1] != 1.0):
        pipe.set_adapters([f"l{i}" for i in range(len(loras))], adapter_weights=[s for _, s in loras])
    image = pipe(PROMPT, height=64, width=64, num_inference_steps=3, guidance_scale=3.5, max_sequence_length=32,
                 generator=torch.Generator().manual_seed(seed)).images[0]
    return np.asarray(image)


def test_cache_matches_diffusers_and_reuses_the_base(cache, tiny_folder, lora_files):
    one, two = lora_files["one"], lora_files["two"]
    with_one = np.asarray(cache.generate(request_for(tiny_folder, LoraSpec(one, 1.0)))[0])
    assert np.array_equal(with_one, plain_diffusers(tiny_folder, [(one, 1.0)]))

    both = np.asarray(cache.generate(request_for(tiny_folder, LoraSpec(one, 0.7), LoraSpec(two, 0.5)))[0])
    assert np.array_equal(both, plain_diffusers(tiny_folder, [(one, 0.7), (two, 0.5)]))
    assert np.abs(both.astype(int) - with_one).max() > 10  # the second LoRA changed the image

    base_only = np.asarray(cache.generate(request_for(tiny_folder))[0])
    assert np.array_equal(base_only, plain_diffusers(tiny_folder, []))  # unloading leaves the base as it was
    assert cache.stats.base_loads == 1
    assert cache.stats.lora_loads == 2  # "one" stayed loaded for the second request
    assert cache.loaded_adapters == []


def test_seed_makes_the_same_image_and_images_use_seed_plus_index(cache, tiny_folder, lora_files):
    request = replace(request_for(tiny_folder, LoraSpec(lora_files["one"], 1.0), seed=11), num_images=2)
    first = [np.asarray(i) for i in cache.generate(request)]
    alone = np.asarray(cache.generate(replace(request, seed=12, num_images=1))[0])
    assert np.array_equal(first[1], alone)
    assert not np.array_equal(first[0], first[1])


def test_hooks_report_steps_images_and_can_stop(cache, tiny_folder):
    from gallery.inference.cache import GenerationCanceled, GenerationHooks

    class Recorder(GenerationHooks):
        def __init__(self) -> None:
            self.steps, self.images = [], []

        def on_step(self, image_index: int, step: int, total_steps: int) -> None:
            self.steps.append((image_index, step, total_steps))

        def on_image(self, image_index: int, seed: int, image) -> None:
            self.images.append((image_index, seed))

        def should_stop(self) -> bool:
            return len(self.images) >= 1

    hooks = Recorder()
    with pytest.raises(GenerationCanceled):
        cache.generate(replace(request_for(tiny_folder), num_images=3), hooks)
    assert hooks.steps[:3] == [(0, 1, 3), (0, 2, 3), (0, 3, 3)]
    assert hooks.images == [(0, 3)]


def test_bad_requests_fail_before_and_leave_the_cache_usable(cache, tiny_folder, tmp_path):
    with pytest.raises(RequestError, match="prompt"):
        cache.generate(replace(request_for(tiny_folder), prompt="  "))
    with pytest.raises(RequestError, match="multiples of 16"):
        cache.generate(replace(request_for(tiny_folder), width=70))
    junk = tmp_path / "junk.safetensors"
    from safetensors.torch import save_file

    save_file({"transformer.nothing.lora_A.weight": torch.zeros(2, 3), "transformer.nothing.lora_B.weight": torch.zeros(3, 2)}, str(junk))
    with pytest.raises(RequestError):
        cache.generate(request_for(tiny_folder, LoraSpec(junk, 1.0)))
    assert np.asarray(cache.generate(request_for(tiny_folder))[0]).shape == (64, 64, 3)


def test_a_new_scale_applies_and_an_unchanged_request_sets_nothing(cache, tiny_folder, lora_files):
    one = lora_files["one"]
    cache.generate(request_for(tiny_folder, LoraSpec(one, 0.5)))
    sets = cache.stats.adapter_sets
    again = np.asarray(cache.generate(request_for(tiny_folder, LoraSpec(one, 0.5)))[0])
    assert cache.stats.adapter_sets == sets, "same LoRAs and scales: no walk over the transformer"
    assert np.array_equal(again, plain_diffusers(tiny_folder, [(one, 0.5)]))
    stronger = np.asarray(cache.generate(request_for(tiny_folder, LoraSpec(one, 1.5)))[0])
    assert cache.stats.adapter_sets == sets + 1
    assert np.array_equal(stronger, plain_diffusers(tiny_folder, [(one, 1.5)]))


def test_a_failed_lora_load_does_not_leave_the_previous_loras_switched_off(cache, tiny_folder, lora_files, tmp_path):
    """A bad file between two identical requests: the second still gets its LoRA."""
    from safetensors.torch import save_file

    one = lora_files["one"]
    first = np.asarray(cache.generate(request_for(tiny_folder, LoraSpec(one, 1.0)))[0])
    # A real LoRA's layout with one tensor of the wrong size: the adapter is injected, then
    # loading its weights fails half-way.
    from safetensors.torch import load_file

    tensors = load_file(str(one))
    key = next(k for k in tensors if k.endswith("lora_B.weight"))
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])
    junk = tmp_path / "half.safetensors"
    save_file(tensors, str(junk))
    with pytest.raises(RequestError):
        cache.generate(request_for(tiny_folder, LoraSpec(one, 1.0), LoraSpec(junk, 1.0)))
    again = np.asarray(cache.generate(request_for(tiny_folder, LoraSpec(one, 1.0)))[0])
    assert np.array_equal(again, first)
