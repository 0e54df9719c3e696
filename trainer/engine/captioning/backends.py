"""Captioner: one loaded vision-language model and how to prompt and decode it.

Three families differ only in how inputs are built and outputs decoded:
  - ``florence2``: an encoder-decoder prompted with a task token (``<MORE_DETAILED_CAPTION>``);
    the output is only the new text.
  - ``blip``: an image-conditioned BERT decoder; unconditional by default, or continuing a
    text prompt ("a photography of") that is then cut from the output.
  - ``vlm``: an instruction-following chat model (SmolVLM, Qwen2.5-VL, ...) loaded through
    AutoModelForImageTextToText; the prompt goes through the processor's chat template and only
    the tokens after the prompt are decoded. Decoder-only, so batches are padded on the left.
Decoding is greedy by default so a caption does not depend on the batch it was produced in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from .presets import DEFAULT_PROMPTS, FLORENCE_TASKS

KINDS: tuple[str, ...] = ("florence2", "blip", "vlm")

# Longest caption each family writes unless the caller or the model's generation config says
# otherwise; a detailed Florence-2 caption runs to ~100 tokens, BLIP's to ~20.
DEFAULT_MAX_NEW_TOKENS: dict[str, int] = {"florence2": 256, "blip": 60, "vlm": 200}
# Generation settings a model folder may ship that we honour (everything else is ours).
_INHERITED_GENERATION_KEYS = (
    "min_new_tokens", "bad_words_ids", "suppress_tokens", "no_repeat_ngram_size",
    "repetition_penalty",
)


@dataclass
class LoadedModel:
    """What the process-wide cache holds: the model, its processor, and where they live."""

    kind: str
    source: str
    model: Any  # a transformers PreTrainedModel with generate()
    processor: Any  # the matching transformers ProcessorMixin
    device: torch.device
    dtype: torch.dtype

    def release(self) -> None:
        """Drop the model and processor, so their memory is freed even while Captioner
        objects that shared them are still referenced (they then refuse to caption)."""
        self.model = None
        self.processor = None


class Captioner:
    """A loaded captioner with its prompt and generation length. Cheap: the model is shared."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        spec: str,
        prompt: str | None = None,
        max_new_tokens: int | None = None,
        num_beams: int = 1,
        on_unload: Callable[[LoadedModel], None] | None = None,
    ) -> None:
        self._loaded: LoadedModel | None = loaded
        self.spec = spec
        self.kind = loaded.kind
        self.source = loaded.source
        self.prompt = DEFAULT_PROMPTS[loaded.kind] if prompt is None else prompt
        if self.kind == "florence2" and self.prompt.startswith("<"):
            if self.prompt not in FLORENCE_TASKS:
                raise ValueError(f"Florence-2 caption task must be one of {FLORENCE_TASKS}")
        configured = getattr(loaded.model.generation_config, "max_new_tokens", None)
        self.max_new_tokens = max_new_tokens or configured or DEFAULT_MAX_NEW_TOKENS[self.kind]
        self.num_beams = num_beams
        self._on_unload = on_unload

    def __repr__(self) -> str:
        return f"Captioner(spec={self.spec!r}, kind={self.kind!r}, device={self.device})"

    @property
    def device(self) -> torch.device:
        return self._require().device

    @property
    def dtype(self) -> torch.dtype:
        return self._require().dtype

    def caption_batch(self, images: Sequence[Image.Image]) -> list[str]:
        """Raw decoded text for each RGB image, in order (no styling)."""
        if not images:
            return []
        loaded = self._require()
        build = {"florence2": self._florence_inputs, "blip": self._blip_inputs}.get(
            self.kind, self._vlm_inputs
        )
        inputs = build(loaded.processor, list(images))
        inputs = inputs.to(device=loaded.device, dtype=loaded.dtype)  # casts floats only
        with torch.inference_mode():
            output = loaded.model.generate(**inputs, **self._generation_kwargs(loaded))
        if self.kind == "vlm":  # decoder-only: the output repeats the (left-padded) prompt
            output = output[:, inputs["input_ids"].shape[1]:]
        texts = loaded.processor.batch_decode(output, skip_special_tokens=True)
        return [self._strip_prompt(text) for text in texts]

    def unload(self) -> None:
        """Free the model (for every Captioner sharing it) so training gets the memory."""
        if self._loaded is not None and self._on_unload is not None:
            self._on_unload(self._loaded)
        self._loaded = None

    def _require(self) -> LoadedModel:
        if self._loaded is None or self._loaded.model is None:
            raise RuntimeError("this captioner was unloaded; call load_captioner() again")
        return self._loaded

    def _generation_kwargs(self, loaded: LoadedModel) -> dict[str, Any]:
        config = loaded.model.generation_config
        # BLIP generates through an inner text decoder that ignores the outer generation
        # config, so settings the model folder ships are passed explicitly for every family.
        kwargs = {
            key: getattr(config, key)
            for key in _INHERITED_GENERATION_KEYS
            if getattr(config, key, None) not in (None, 1.0, 0)
        }
        kwargs.update(do_sample=False, num_beams=self.num_beams, max_new_tokens=self.max_new_tokens)
        if self.num_beams == 1:  # silence warnings about beam-only settings the model ships
            kwargs.update(early_stopping=False, length_penalty=1.0)
        return kwargs

    def _florence_inputs(self, processor: Any, images: list[Image.Image]) -> Any:
        return processor(text=[self.prompt] * len(images), images=images, return_tensors="pt")

    def _blip_inputs(self, processor: Any, images: list[Image.Image]) -> Any:
        if not self.prompt:
            return processor(images=images, return_tensors="pt")
        return processor(images=images, text=[self.prompt] * len(images), return_tensors="pt")

    def _vlm_inputs(self, processor: Any, images: list[Image.Image]) -> Any:
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}
        ]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        processor.tokenizer.padding_side = "left"  # generation continues from the right end
        return processor(
            text=[text] * len(images),
            images=[[image] for image in images],  # one image per conversation
            padding=True,
            return_tensors="pt",
        )

    def _strip_prompt(self, text: str) -> str:
        text = text.strip()
        # BLIP echoes its text prompt; cut it so the caption is only what the model added.
        if self.kind == "blip" and self.prompt and text.lower().startswith(self.prompt.lower()):
            text = text[len(self.prompt):].strip()
        return text
