"""Staged memory: captions are encoded once at their real T5 length, then the encoders are gone."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import torch

from trainer.engine.cache import build_cache
from trainer.engine.data import load_dataset
from trainer.engine.tiny import build_tiny_pipeline

from .conftest import make_image


def test_t5_runs_to_the_caption_length_and_the_encoders_are_freed(tmp_path: Path) -> None:
    captions = ["zxq red", "zxq, a green circle on grey"]
    for i, caption in enumerate(captions):
        make_image(tmp_path / f"{i}.png", (64, 64), (200, 40 * i, 30))
        (tmp_path / f"{i}.txt").write_text(caption)
    examples = load_dataset(tmp_path, 64, "zxq", False)
    pipeline = build_tiny_pipeline()
    lengths: list[int] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        lengths.append((kwargs.get("input_ids") if "input_ids" in kwargs else args[0]).shape[1])

    pipeline.text_encoder_2.register_forward_pre_hook(record, with_kwargs=True)
    encoders = [weakref.ref(pipeline.text_encoder), weakref.ref(pipeline.text_encoder_2)]
    longest = max(len(ids) for ids in pipeline.tokenizer_2(captions).input_ids)  # with the end token

    cache = build_cache(pipeline, examples, max_sequence_length=512, sample_prompts=[], sample_sequence_length=512,
                        flip=False, device=torch.device("cpu"), offload=False, log=lambda _: None)  # fmt: skip

    assert longest < 40 and lengths and set(lengths) == {longest}, lengths  # captions and the empty caption
    assert cache.captions.text.shape[:2] == (2, longest) and cache.empty.text.shape[1] == longest
    assert pipeline.text_encoder is None and pipeline.text_encoder_2 is None
    gc.collect()
    assert all(ref() is None for ref in encoders), "a text encoder is still referenced after caching"
    assert len(cache.latents) == 2 and cache.latents[0].shape == (16, 8, 8)
