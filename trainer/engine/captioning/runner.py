"""Caption a list of photos in batches, reporting each result as soon as it exists."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from .backends import Captioner
from .images import ImageUnreadable, load_image
from .style import CaptionStyle, clean_caption, style_caption, template_caption

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class CaptionResult:
    """One photo's outcome: `caption` is styled and ready to train on; `raw` is the model text.

    `error` is None on success, or a short reason ("not a readable image ...") with an empty
    caption. A model that wrote nothing usable gets the template caption, not an error.
    """

    path: PathLike
    caption: str
    raw: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def caption_images(
    captioner: Captioner,
    image_paths: Sequence[PathLike],
    *,
    batch_size: int = 4,
    style: CaptionStyle | None = None,
    on_caption: Callable[[CaptionResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[CaptionResult]:
    """Caption every path, `batch_size` photos per forward pass, in input order.

    A photo that cannot be read is reported with its reason and the others go on; if a whole
    batch fails (one odd image can break a batched forward), it is retried one photo at a
    time so only the culprit is lost. `on_caption(result)` runs as each result is produced,
    so a worker can stream captions to the browser. `should_stop()` is polled between
    batches; when it returns True the results so far are returned.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    style = style or CaptionStyle()
    emit = on_caption or (lambda result: None)
    results: list[CaptionResult] = []
    for start in range(0, len(image_paths), batch_size):
        if should_stop is not None and should_stop():
            break
        for result in _caption_chunk(captioner, image_paths[start:start + batch_size], style):
            results.append(result)
            emit(result)
    return results


def _caption_chunk(
    captioner: Captioner, paths: Sequence[PathLike], style: CaptionStyle
) -> list[CaptionResult]:
    """Results for one batch of paths, in order: unreadable files first become errors."""
    outcome: dict[int, CaptionResult] = {}
    images: list[tuple[int, Image.Image]] = []
    for index, path in enumerate(paths):
        try:
            images.append((index, load_image(path)))
        except ImageUnreadable as exc:
            outcome[index] = CaptionResult(path=path, caption="", raw="", error=str(exc))
    for index, raw_or_error in _generate(captioner, images):
        path = paths[index]
        if isinstance(raw_or_error, Exception):
            message = f"captioning failed: {type(raw_or_error).__name__}: {raw_or_error}"
            outcome[index] = CaptionResult(path=path, caption="", raw="", error=message[:500])
        else:
            outcome[index] = CaptionResult(path=path, caption=_styled(raw_or_error, style),
                                           raw=raw_or_error)
    return [outcome[index] for index in range(len(paths))]


def _generate(
    captioner: Captioner, images: list[tuple[int, Image.Image]]
) -> list[tuple[int, str | Exception]]:
    """Raw text per (index, image); a failing batch falls back to one image at a time."""
    if not images:
        return []
    try:
        texts = captioner.caption_batch([image for _, image in images])
        return [(index, text) for (index, _), text in zip(images, texts, strict=True)]
    except Exception as exc:  # any model error: isolate the image that caused it
        if len(images) == 1:
            logger.warning("captioning failed: %s", exc)
            return [(images[0][0], exc)]
        logger.info("batch of %d failed (%s); retrying one by one", len(images), exc)
    results: list[tuple[int, str | Exception]] = []
    for item in images:
        results.extend(_generate(captioner, [item]))
    return results


def _styled(raw: str, style: CaptionStyle) -> str:
    # Nothing usable (empty, or only tokens that cleaning removes): keep the photo trainable.
    if not clean_caption(raw):
        return template_caption(style.trigger, prefix=style.prefix, suffix=style.suffix)
    return style_caption(raw, trigger=style.trigger, placement=style.placement,
                         prefix=style.prefix, suffix=style.suffix)
