"""Generation engine of the studio: pure ML (torch, diffusers, peft), never Django.

`PipelineCache` keeps one base pipeline loaded in a worker and swaps LoRAs per request, so the
second request with another LoRA pays for a few megabytes of adapter weights, not for the base.
Importing this package is cheap; torch is imported on first use of the cache.
"""

from __future__ import annotations

from .request import GenerationRequest, LoraSpec, RequestError

__all__ = ["GenerationRequest", "LoraSpec", "PipelineCache", "RequestError", "GenerationCanceled"]


def __getattr__(name: str):  # noqa: ANN202  (lazy: these pull in torch and diffusers)
    if name in ("PipelineCache", "GenerationCanceled"):
        from . import cache

        return getattr(cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
