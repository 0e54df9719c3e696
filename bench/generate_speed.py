"""Generation speed: the studio's worker path vs a plain diffusers call, and LoRA swap time.

    python bench/generate_speed.py                 # tiny base, CPU
    python bench/generate_speed.py --spec small --steps 8 --runs 10
    python bench/generate_speed.py --profile       # where the studio path spends its time

Three ways to make the same image (same pipeline object, LoRA, prompt, seed and settings),
timed in turn each round so drift (CPU frequency, caches) hits all alike; medians reported:
- plain: `FluxPipeline.__call__` on the pipeline with the LoRA loaded, nothing else;
- cache: `PipelineCache.generate` with no-op hooks (adapter check, step callback, generator);
- studio: `gallery.generation_run.run_generation`, the GPU worker's task body with its real
  hooks: claim the row, progress rows and events, PNG and thumbnail written to storage, the
  final state, webhooks checked (Django on a throwaway SQLite database and media folder).
The target is the studio within 5% of plain diffusers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = "a red circle on a blue background"


def make_lora(path: Path, pipeline_factory: Callable[[], Any], seed: int) -> Path:
    import torch

    from trainer.engine import lora as lora_files

    transformer = pipeline_factory().transformer
    lora_files.add_lora(transformer, rank=8, alpha=8, targets="full")
    generator = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=generator) * 0.1 for k, v in lora_files.raw_state_dict(transformer).items()}
    return lora_files.save_lora(path, state, 1.0, torch.float32, {"bench": seed})


def setup_django(data_dir: Path) -> None:
    """A throwaway studio: SQLite database, media and work folders in `data_dir`."""
    os.environ["DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flux_studio.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def studio_runner(args: argparse.Namespace, lora: Path) -> Callable[[], float]:
    """A function that stores a generation request (untimed) and runs the worker's task body on it."""
    from django.contrib.auth import get_user_model
    from django.core.files.base import ContentFile

    from gallery.generation_run import run_generation
    from gallery.models import Generation
    from trainer.models import JobState, TrainingJob

    owner = get_user_model().objects.create_user("bench", password="bench password 1")
    job = TrainingJob.objects.create(owner=owner, name="bench", state=JobState.SUCCEEDED, base_model="tiny",
                                     trigger_word="zqx", config={}, total_steps=1, step=1)
    job.lora_file.save("lora.safetensors", ContentFile(lora.read_bytes()), save=True)
    row = {"kind": "training", "id": job.pk, "scale": 1.0, "training_id": job.pk, "label": "bench", "trigger_word": "zqx"}

    def run() -> float:
        generation = Generation.objects.create(owner=owner, prompt=PROMPT, base_model="tiny", loras=[row], seed=1,
                                               steps=args.steps, guidance=3.5, width=args.size, height=args.size)
        started = time.perf_counter()
        run_generation(generation.pk)
        elapsed = time.perf_counter() - started
        assert Generation.objects.get(pk=generation.pk).state == "succeeded"
        return elapsed

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--profile", action="store_true", help="profile the studio path and print its top functions")
    args = parser.parse_args()
    setup_django(Path(tempfile.mkdtemp(prefix="bench-studio-")))

    import torch
    from diffusers.utils import logging as diffusers_logging

    from gallery import generation_run
    from gallery.defaults import defaults_for
    from gallery.inference import GenerationRequest, LoraSpec
    from gallery.inference.cache import PipelineCache
    from trainer.engine.tiny import SMALL_SPEC, build_tiny_pipeline

    diffusers_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = SMALL_SPEC if args.spec == "small" else None
    factory = lambda: build_tiny_pipeline(spec)  # noqa: E731
    folder = Path(tempfile.mkdtemp(prefix="bench-loras-"))
    loras = [make_lora(folder / f"l{i}" / "lora.safetensors", factory, i) for i in range(2)]

    started = time.perf_counter()
    cache = PipelineCache(device="cpu", loader=lambda base, device, dtype: factory())
    generation_run._cache = cache  # the worker's cache is this one: the studio path uses the same pipeline
    sequence = defaults_for("tiny").max_sequence_length
    request = GenerationRequest(base="tiny", prompt=PROMPT, seed=1, steps=args.steps, guidance=3.5, width=args.size,
                                height=args.size, max_sequence_length=sequence, loras=(LoraSpec(loras[0], 1.0),))
    cache.generate(request)  # loads the base and the LoRA, warms up kernels
    first_s = time.perf_counter() - started
    pipe = cache.pipeline("tiny")
    studio = studio_runner(args, loras[0])
    studio()  # the studio's own copy of the LoRA file (same bytes) replaces the bench's adapter once

    def plain() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            pipe(prompt=PROMPT, height=args.size, width=args.size, num_inference_steps=args.steps, guidance_scale=3.5,
                 max_sequence_length=sequence, generator=torch.Generator().manual_seed(1))
        return time.perf_counter() - t

    studio_request = generation_run.build_request(generation_run.Generation.objects.order_by("-pk").first())

    def cached() -> float:
        t = time.perf_counter()
        cache.generate(studio_request)
        return time.perf_counter() - t

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(lambda: [studio() for _ in range(args.runs)])
        stats = pstats.Stats(profiler).sort_stats("cumulative")
        stats.print_stats(r"gallery|flux_studio|imaging|storage|PIL/Image.py:.*save", 40)

    times: dict[str, list[float]] = {"plain": [], "cache": [], "studio": []}
    for _ in range(args.runs):
        times["plain"].append(plain())
        times["cache"].append(cached())
        times["studio"].append(studio())

    swaps, keeps = [], []
    for i in range(args.runs):
        cache.set_loras(pipe, (LoraSpec(loras[(i + 1) % 2], 1.0),))  # unload one, load the other
        swaps.append(cache.stats.last_swap_s)
        cache.set_loras(pipe, (LoraSpec(loras[(i + 1) % 2], 0.8),))  # same LoRA, new scale
        keeps.append(cache.stats.last_swap_s)

    median = {name: statistics.median(values) for name, values in times.items()}
    # Other processes on a shared machine only ever slow a run down: the fastest run of each path
    # is the steadiest estimate of its own cost, so overheads are given on both.
    best = {name: min(values) for name, values in times.items()}
    params = sum(x.numel() for x in pipe.transformer.parameters()) / 1e6
    print(f"base: {args.spec} ({params:.1f}M transformer params incl. LoRA), {args.size}x{args.size}, {args.steps} steps, CPU, "
          f"{torch.get_num_threads()} threads, {args.runs} runs")
    print(f"first request (build base + load LoRA + generate): {first_s:.2f} s; base loads: {cache.stats.base_loads}")
    print(f"plain diffusers        median {median['plain'] * 1000:8.1f} ms, fastest {best['plain'] * 1000:8.1f} ms")
    for name, label in (("cache", "pipeline cache"), ("studio", "studio worker path")):
        by_median = 100 * (median[name] - median["plain"]) / median["plain"]
        by_best = 100 * (best[name] - best["plain"]) / best["plain"]
        print(f"{label:<22} median {median[name] * 1000:8.1f} ms, fastest {best[name] * 1000:8.1f} ms  "
              f"({by_median:+.1f}% / {by_best:+.1f}% vs plain; target within 5%)")
    # Paired per round (same moment, same machine load): what the studio adds to one generation.
    added = statistics.median(s - c for s, c in zip(times["studio"], times["cache"]))
    print(f"studio path minus cache, paired per round: median {added * 1000:.1f} ms per generation "
          f"(database rows, events, PNG and thumbnail files)")
    print(f"LoRA swap (unload one, load another): median {1000 * statistics.median(swaps):.1f} ms")
    print(f"same LoRA, new scale:                 median {1000 * statistics.median(keeps):.2f} ms")


if __name__ == "__main__":
    main()
