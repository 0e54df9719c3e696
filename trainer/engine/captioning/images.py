"""Open photos for captioning the way the dataset stores them: upright, RGB, not huge."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

try:  # iPhone photos; optional so a server without pillow-heif still captions JPEG/PNG/WebP
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - depends on the environment
    pass

# Every captioner resizes to <= 768 px; shrinking giant photos first saves CPU and memory.
MAX_SIDE = 1536


class ImageUnreadable(ValueError):
    """The file is missing, not an image, truncated, or too large to decode safely."""


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open `path` with its EXIF orientation applied, as RGB, longest side at most MAX_SIDE."""
    file = Path(path)
    if not file.is_file():
        raise ImageUnreadable(f"file not found: {file.name}")
    try:
        with Image.open(file) as opened:
            opened.load()  # decode now so truncated files fail here, not inside a batch
            image = ImageOps.exif_transpose(opened)
            image = _to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise ImageUnreadable(f"image too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageUnreadable("not a readable image: unknown or corrupt format") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises these for damaged files
        raise ImageUnreadable(f"not a readable image: damaged or truncated ({exc})") from exc
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency flattened onto white (plain convert() would turn it black)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")
