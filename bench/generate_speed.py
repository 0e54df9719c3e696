"""Generation speed: the studio's pipeline cache vs a plain diffusers call, and LoRA swap time.

    python bench/generate_speed.py                 # tiny base, CPU
    python bench/generate_speed.py --spec small --steps 8 --runs 10

Both paths run on the same pipeline object with the same LoRA, prompt, seed and settings, timed
alternately so drift (CPU frequency, caches) hits both alike; medians are reported. The target
is the cache within 5% of plain diffusers: it adds a step callback and a seeded generator only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_lora(path: Path, pipeline_factory, seed: int) -> Path:
    import torch

    from trainer.engine import lora as lora_files

    transformer = pipeline_factory().transformer
    lora_files.add_lora(transformer, rank=8, alpha=8, targets="full")
    generator = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=generator) * 0.1 for k, v in lora_files.raw_state_dict(transformer).items()}
    return lora_files.save_lora(path, state, 1.0, torch.float32, {"bench": seed})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()

    import torch
    from diffusers.utils import logging as diffusers_logging

    from gallery.inference import GenerationRequest, LoraSpec
    from gallery.inference.cache import PipelineCache
    from trainer.engine.tiny import SMALL_SPEC, build_tiny_pipeline

    diffusers_logging.set_verbosity_error()
    spec = SMALL_SPEC if args.spec == "small" else None
    factory = lambda: build_tiny_pipeline(spec)  # noqa: E731
    folder = Path(tempfile.mkdtemp(prefix="bench-loras-"))
    loras = [make_lora(folder / f"l{i}" / "lora.safetensors", factory, i) for i in range(2)]

    started = time.perf_counter()
    cache = PipelineCache(device="cpu", loader=lambda base, device, dtype: factory())
    request = GenerationRequest(base="bench", prompt="a red circle on a blue background", seed=1, steps=args.steps,
                                guidance=3.5, width=args.size, height=args.size, max_sequence_length=32,
                                loras=(LoraSpec(loras[0], 1.0),))
    cache.generate(request)  # loads the base and the LoRA, warms up kernels
    first_s = time.perf_counter() - started
    pipe = cache.pipeline("bench")

    def plain() -> None:
        pipe(prompt=request.prompt, height=args.size, width=args.size, num_inference_steps=args.steps, guidance_scale=3.5,
             max_sequence_length=32, generator=torch.Generator().manual_seed(1))

    studio_s, plain_s = [], []
    for _ in range(args.runs):
        t = time.perf_counter(); cache.generate(request); studio_s.append(time.perf_counter() - t)  # noqa: E702
        t = time.perf_counter(); plain(); plain_s.append(time.perf_counter() - t)  # noqa: E702

    swaps, keeps = [], []
    for i in range(args.runs):
        cache.set_loras(pipe, (LoraSpec(loras[(i + 1) % 2], 1.0),))  # unload one, load the other
        swaps.append(cache.stats.last_swap_s)
        cache.set_loras(pipe, (LoraSpec(loras[(i + 1) % 2], 0.8),))  # same LoRA, new scale
        keeps.append(cache.stats.last_swap_s)

    s, p = statistics.median(studio_s), statistics.median(plain_s)
    params = sum(x.numel() for x in pipe.transformer.parameters()) / 1e6
    print(f"base: {args.spec} ({params:.1f}M transformer params incl. LoRA), {args.size}x{args.size}, {args.steps} steps, CPU, "
          f"{torch.get_num_threads()} threads, {args.runs} runs")
    print(f"first request (build base + load LoRA + generate): {first_s:.2f} s; base loads: {cache.stats.base_loads}")
    print(f"studio cache  median {s * 1000:8.1f} ms")
    print(f"plain diffusers median {p * 1000:6.1f} ms")
    print(f"overhead: {100 * (s - p) / p:+.1f}% (target within 5%)")
    print(f"LoRA swap (unload one, load another): median {1000 * statistics.median(swaps):.1f} ms")
    print(f"same LoRA, new scale:                 median {1000 * statistics.median(keeps):.2f} ms")


if __name__ == "__main__":
    main()
