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


def test_one_encoder_at_a_time_gives_the_pipelines_own_encoding() -> None:
    """The staged encoding (CLIP, dropped, then T5) equals what encode_prompt gives at inference."""
    from trainer.engine.cache import encode_prompt_sets

    prompts = ["a photo of zxq", "zxq on a red mat", ""]
    reference = build_tiny_pipeline()
    expected_text, expected_pooled, _ = reference.encode_prompt(prompt=prompts, prompt_2=None, max_sequence_length=32)
    staged = build_tiny_pipeline()
    (encoded,) = encode_prompt_sets(staged, [(prompts, 32)], torch.device("cpu"))
    assert torch.equal(encoded.text, expected_text) and torch.equal(encoded.pooled, expected_pooled)
    assert staged.text_encoder is None and staged.text_encoder_2 is None


def test_padded_captions_train_on_the_text_inference_gives(tmp_path: Path) -> None:
    """pad_captions: every caption runs through T5 at the full length and keeps all of it, so the
    states equal the pipeline's encode_prompt at inference (padding changes them: no mask)."""
    captions = ["zxq red", "zxq, a green circle on grey"]
    for i, caption in enumerate(captions):
        make_image(tmp_path / f"{i}.png", (64, 64), (200, 40 * i, 30))
        (tmp_path / f"{i}.txt").write_text(caption)
    examples = load_dataset(tmp_path, 64, "zxq", False)
    messages: list[str] = []
    cache = build_cache(build_tiny_pipeline(), examples, max_sequence_length=32, pad_captions=True, sample_prompts=[],
                        sample_sequence_length=32, flip=False, device=torch.device("cpu"), offload=False,
                        log=messages.append)  # fmt: skip
    inference, pooled, _ = build_tiny_pipeline().encode_prompt(prompt=captions, prompt_2=None, max_sequence_length=32)
    empty, _, _ = build_tiny_pipeline().encode_prompt(prompt=[""], prompt_2=None, max_sequence_length=32)
    assert cache.captions.text.shape[1] == 32 and torch.equal(cache.captions.text, inference)
    assert torch.equal(cache.captions.pooled, pooled) and torch.equal(cache.empty.text, empty)
    assert any("at 32 T5 tokens (padded, as inference pads)" in m for m in messages), messages
    lowered: list[str] = []  # a cap below the inference length: padded, but not as inference
    build_cache(build_tiny_pipeline(), examples, max_sequence_length=24, pad_captions=True, sample_prompts=[],
                sample_sequence_length=32, flip=False, device=torch.device("cpu"), offload=False, log=lowered.append)
    assert any("at 24 T5 tokens (padded to max_sequence_length; inference pads to 32" in m for m in lowered), lowered
    # unpadded, the same captions' states differ from inference's: why the option exists
    short = build_cache(build_tiny_pipeline(), examples, max_sequence_length=32, sample_prompts=[],
                        sample_sequence_length=32, flip=False, device=torch.device("cpu"), offload=False,
                        log=messages.append)  # fmt: skip
    length = short.captions.text.shape[1]
    assert length < 32 and not torch.allclose(short.captions.text, inference[:, :length], atol=1e-3)
