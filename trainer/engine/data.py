"""The dataset: find images and captions, check them, and sort them into aspect-ratio buckets.

With several resolutions (ai-toolkit's `resolution: [512, 768, 1024]`) every image becomes one
example per resolution, each in the bucket of about that area that fits its aspect ratio best.

Everything here runs before any model is loaded, so bad input fails in a second with a message
that names the file, not after minutes of loading. Encoding into latents lives in `cache.py`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .config import resolution_sides
from .errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".heic", ".heif")


@dataclass(frozen=True)
class Example:
    image_path: Path
    caption: str
    size: tuple[int, int]  # (width, height) after EXIF orientation
    bucket: tuple[int, int]  # (width, height) it is resized and cropped to
    resolution: int  # the side length whose buckets `bucket` comes from


def _register_heif() -> None:
    """Open iPhone photos when pillow-heif is installed; without it they fail with a clear error."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


def load_dataset(
    images_dir: str | Path, resolution: int | list[int], trigger_word: str, add_trigger: bool
) -> list[Example]:
    """Read and check every image and caption in `images_dir` (not recursive).

    One example per (image, resolution), smallest resolution first; with one resolution that is
    one example per image, in file name order.
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise DatasetError(f"images folder {folder} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DatasetError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)})")
    _register_heif()
    resolutions = resolution_sides(resolution)
    buckets = {side: make_buckets(side) for side in resolutions}
    captions = {path: read_caption(path, trigger_word) for path in paths}
    captions = check_trigger(captions, trigger_word, add_trigger)
    sizes = {path: image_size(path) for path in paths}
    return [Example(path, captions[path], sizes[path], nearest_bucket(sizes[path], buckets[side]), side)
            for side in resolutions for path in paths]  # fmt: skip


def describe(examples: list[Example]) -> str:
    """How the examples fall into buckets, per resolution, for the run's log; and which images
    are smaller than their bucket (upscaled, so softer than the rest)."""
    images = len({e.image_path for e in examples})
    resolutions = sorted({e.resolution for e in examples})
    if len(resolutions) == 1:
        sizes = sorted({e.bucket for e in examples})
        return f"{images} images in {len(sizes)} bucket(s) {sizes}" + _upscaled(examples)
    parts = []
    for side in resolutions:
        chosen = [e for e in examples if e.resolution == side]
        sizes = sorted({e.bucket for e in chosen})
        parts.append(f"{side} px: {len(chosen)} examples in {len(sizes)} bucket(s) {sizes}")
    return f"{images} images x {len(resolutions)} resolutions = {len(examples)} examples; " + "; ".join(parts) + _upscaled(examples)


def _upscaled(examples: list[Example]) -> str:
    """'; N upscaled ...' for the examples whose image must be enlarged to cover its bucket."""
    small = [e for e in examples if max(e.bucket[0] / e.size[0], e.bucket[1] / e.size[1]) > 1]
    if not small:
        return ""
    first = small[0]
    return (f"; {len(small)} example(s) upscaled to their bucket, softer than the rest (e.g. {first.image_path.name}, "
            f"{first.size[0]}x{first.size[1]} to {first.bucket[0]}x{first.bucket[1]}): larger photos, or a smaller "
            "resolution, train sharper")


def read_caption(image_path: Path, trigger_word: str) -> str:
    """The same-name .txt caption (kohya convention), or just the trigger word when there is none."""
    caption_path = image_path.with_suffix(".txt")
    if not caption_path.is_file():
        return trigger_word
    try:
        return " ".join(caption_path.read_text(encoding="utf-8").split())
    except UnicodeDecodeError as error:
        raise DatasetError(f"caption {caption_path.name} is not UTF-8 text") from error


def has_trigger(caption: str, trigger_word: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(trigger_word)}(?!\w)", caption, flags=re.IGNORECASE) is not None


def check_trigger(captions: dict[Path, str], trigger_word: str, add_trigger: bool) -> dict[Path, str]:
    """Every caption must carry the trigger word; prepend it only when asked to."""
    if not trigger_word:
        return captions
    lacking = [path for path, caption in captions.items() if not has_trigger(caption, trigger_word)]
    if lacking and not add_trigger:
        names = ", ".join(p.with_suffix(".txt").name for p in lacking[:3]) + (", ..." if len(lacking) > 3 else "")
        raise DatasetError(
            f"{len(lacking)} of {len(captions)} captions lack the trigger word {trigger_word!r} ({names}). "
            "Add it to them, or let the trainer prepend it: add_trigger_to_captions: true (--add-trigger on the command line)."
        )
    return {path: (f"{trigger_word}, {c}" if path in lacking and c else c or trigger_word) for path, c in captions.items()}


def image_size(path: Path) -> tuple[int, int]:
    """Width and height as displayed (EXIF orientation applied); fails on unreadable or truncated files."""
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(0x0112, 1)
            width, height = image.size
            # Decode every pixel now: verify() only checks the structure, so a truncated upload
            # would pass it and fail minutes later, after the base model has loaded.
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"cannot read image {path.name}: {error}") from error
    if width < 16 or height < 16:
        raise DatasetError(f"image {path.name} is only {width}x{height} pixels")
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def make_buckets(resolution: int) -> list[tuple[int, int]]:
    """(width, height) pairs of about resolution² pixels, aspect 1:2 to 2:1, sides multiples of 16.

    Large resolutions step by 64 px so a few dozen buckets cover every photo; each side stays a
    multiple of 16 because FLUX packs 2x2 latents of an 8x VAE.
    """
    if resolution % 16:
        raise DatasetError(f"resolution must be a multiple of 16, got {resolution}")
    step = 64 if resolution >= 512 else 16
    area = resolution * resolution
    buckets = {(resolution, resolution)}
    width = step
    while width <= 2 * resolution:
        height = area // width // step * step
        if height >= step and 0.5 <= width / height <= 2.0:
            buckets.add((width, height))
            buckets.add((height, width))
        width += step
    return sorted(buckets)


def nearest_bucket(size: tuple[int, int], buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest (in log space, so 1:2 and 2:1 weigh the same)."""
    aspect = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))


def eight_bit(image: Image.Image) -> Image.Image:
    """`image`, or, when it is 16-bit greyscale (mode I;16*, or I as some PNGs open), the same in
    8-bit "L" with its tones scaled: Pillow's convert("RGB") would clip everything past 255 to white.

    Mode I holds 32-bit integers: values past 255 mean a 16-bit source; an image whose values all fit
    in 8 bits is taken as it is. (The studio's upload check uses this too.)"""
    if not image.mode.startswith("I"):
        return image
    import numpy as np

    pixels = np.asarray(image)  # uint16 for I;16*, int32 for I: no wider copy (a 64 MP scan is 128 MB)
    if image.mode.startswith("I;16") or pixels.max(initial=0) > 255:
        pixels = pixels >> 8
    if pixels.dtype != np.uint16:  # mode I may hold negatives or values past 16 bits
        pixels = np.clip(pixels, 0, 255)
    return Image.fromarray(pixels.astype(np.uint8), mode="L")


def load_image(path: Path, bucket: tuple[int, int], flip: bool = False) -> Image.Image:
    """The image upright, in RGB, resized to cover the bucket and center-cropped to it."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        image = eight_bit(image)
        if image.mode in ("RGBA", "LA", "P"):
            # Transparent areas become white instead of whatever colour the pixels hide.
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB")
    width, height = bucket
    scale = max(width / image.width, height / image.height)
    resized = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(resized, Image.Resampling.LANCZOS)
    left, top = (resized[0] - width) // 2, (resized[1] - height) // 2
    image = image.crop((left, top, left + width, top + height))
    return ImageOps.mirror(image) if flip else image
