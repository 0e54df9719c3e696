"""Near-duplicates: a new photo that is an earlier one again, resized, re-compressed or slightly
cropped, so that training would see one picture twice and overweight it.

Two checks, both needed:
- **Layout.** The perceptual hash (imagehash's phash: the greyscale picture's coarse structure)
  of the two photos is within NEAR_DUPLICATE_DISTANCE bits. It is stored on the Photo at upload.
- **Colour.** The phash is blind to colour, so the same composition in other colours (the pet on a
  red blanket, then on a blue one; a style set of one shape in eight colours; a black-and-white
  version) hashes alike, yet teaches the model something new. Each photo's stored thumbnail is
  boiled down to a 16×16 grid of mean CIELAB colours, and the two photos count as a different
  colouring when at least COLOUR_CHANGED_SHARE of the grid moved by more than COLOUR_DELTA_E.
  Each cell is matched against the other grid's cells around the same place, so the shift of a
  slight crop does not read as a change of colour. A grade a person would not call a recolouring
  (white balance, exposure, a little saturation, JPEG's colour loss) stays well under it.

The colour grid is computed from the thumbnail already stored with every photo (older rows too),
and only for the few photos whose layout matches, so no new column is needed. A thumbnail that
cannot be read leaves the layout check alone to decide, as it did before the colour check.
"""

from __future__ import annotations

import io
import logging

import imagehash
from PIL import Image, ImageStat, UnidentifiedImageError

from trainer.models import Dataset, Photo

log = logging.getLogger(__name__)

NEAR_DUPLICATE_DISTANCE = 6  # perceptual-hash bits; 0-6 is "the same picture, re-encoded/resized"
FLAT_STDDEV = 3.0  # levels (of 255) in each channel at 32x32: below it a photo is a single colour
# The colour check, tuned on ~170 pairs of generated photo-like pictures whose layouts match
# (tests/trainer/test_duplicates.py keeps examples). Copies (resized, JPEG down to q25, cropped up to
# 8%, rotated 2°, a little brighter, warmer or more saturated) changed at most 5 of the 256 cells,
# most of them 0; recolourings (an object a third of the picture wide in another colour, the same
# shape in other colours, a hue turned 60° or more, a black-and-white copy) changed 16 or more. The bar sits
# between the two, about as far from each.
COLOUR_GRID = 16  # cells a side: coarse enough to ignore texture, fine enough to see one object
COLOUR_SHIFT = 2  # cells a match may move: a crop moves and rescales what is near the edges
COLOUR_DELTA_E = 35.0  # CIE76 ΔE: plainly another colour (a mild white-balance shift is ~10)
COLOUR_CHANGED_SHARE = 0.035  # of the grid: 9 of 256 cells
# Layout matches whose thumbnails are read per upload, closest first: a set of one shape in many
# colours matches everything by layout, and each read is a storage round trip (S3 included).
MAX_COLOUR_CHECKS = 32

Lab = tuple[float, float, float]


def layout_hash(image: Image.Image) -> imagehash.ImageHash | None:
    """The photo's perceptual hash, or None when the picture is (nearly) flat in brightness: the
    hash sees brightness only, and such a picture hashes to zeros and noise, which would "match"
    other such pictures whatever their colours (stored empty, so never matched now nor later)."""
    small = image.convert("L").resize((32, 32))
    if ImageStat.Stat(small).stddev[0] < FLAT_STDDEV:
        return None
    return imagehash.phash(image.convert("RGB"))


def colour_grid(thumbnail: bytes) -> list[Lab]:
    """Mean CIELAB colour of each cell of a COLOUR_GRID² grid over a stored thumbnail (JPEG bytes),
    row by row. New and stored photos both go through their thumbnail, so an untouched copy
    gives the same grid."""
    with Image.open(io.BytesIO(thumbnail)) as image:
        small = image.convert("RGB").resize((COLOUR_GRID, COLOUR_GRID), Image.Resampling.BOX)
    rgb = small.tobytes()
    return [_srgb_to_lab((rgb[i], rgb[i + 1], rgb[i + 2])) for i in range(0, len(rgb), 3)]


def _srgb_to_lab(rgb: tuple[int, int, int]) -> Lab:
    """sRGB (0-255) to CIELAB (D65): distances in Lab follow how different colours look."""
    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in rgb)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > 216 / 24389 else (24389 / 27 * t + 16) / 116

    fx, fy, fz = f(x), f(y), f(z)
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def colours_differ(first: list[Lab], second: list[Lab]) -> bool:
    """True when the two grids are a different colouring of the picture, not a copy of it."""
    changed = sum(1 for a, b in zip(_nearest_distances(first, second), _nearest_distances(second, first))
                  if max(a, b) > COLOUR_DELTA_E)
    return changed >= COLOUR_CHANGED_SHARE * COLOUR_GRID * COLOUR_GRID


def _nearest_distances(grid: list[Lab], other: list[Lab]) -> list[float]:
    """For each cell of `grid`, the ΔE to the closest colour among `other`'s cells within
    COLOUR_SHIFT of the same place."""
    n, shift = COLOUR_GRID, COLOUR_SHIFT
    distances = []
    for row in range(n):
        for col in range(n):
            here = grid[row * n + col]
            distances.append(min(
                _delta_e(here, other[r * n + c])
                for r in range(max(0, row - shift), min(n, row + shift + 1))
                for c in range(max(0, col - shift), min(n, col + shift + 1))
            ))
    return distances


def _delta_e(a: Lab, b: Lab) -> float:
    return ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2 + (a[2] - b[2]) ** 2) ** 0.5


def _stored_grid(photo: Photo) -> list[Lab] | None:
    """The colour grid of a stored photo's thumbnail, or None when it cannot be read."""
    try:
        with photo.thumbnail.open("rb") as handle:
            return colour_grid(handle.read())
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        log.warning("thumbnail of photo %s unreadable: near-duplicate check by layout alone", photo.pk, exc_info=True)
        return None


def near_duplicate(*, dataset: Dataset, phash: imagehash.ImageHash, thumbnail: bytes) -> Photo | None:
    """The earlier photo of `dataset` that the new one (its hash and thumbnail) nearly repeats:
    the closest in layout among those in the same colours; None when there is none."""
    matches = []
    for other in dataset.photos.exclude(phash="").only("id", "phash", "original_name", "thumbnail"):
        distance = phash - imagehash.hex_to_hash(other.phash)
        if distance <= NEAR_DUPLICATE_DISTANCE:
            matches.append((distance, other))
    if not matches:
        return None
    grid = colour_grid(thumbnail)
    matches.sort(key=lambda match: match[0])  # stable: equally close ones stay oldest first
    for _, other in matches[:MAX_COLOUR_CHECKS]:
        other_grid = _stored_grid(other)
        if other_grid is None or not colours_differ(grid, other_grid):
            return other
    return None


def recheck_flags() -> int:
    """Clear the near-duplicate flag of photos whose earlier twin is in other colours: flags set by
    releases that compared layout alone. Returns how many photos were cleared. A photo whose
    thumbnails cannot be read keeps its flag."""
    cleared = 0
    for photo in Photo.objects.filter(duplicate_of__isnull=False).select_related("duplicate_of").iterator():
        twin = photo.duplicate_of
        mine, theirs = _stored_grid(photo), _stored_grid(twin)
        if mine is None or theirs is None or not colours_differ(mine, theirs):
            continue
        note = f"looks almost the same as {twin.original_name}"
        photo.warnings = [warning for warning in photo.warnings if warning != note]
        photo.duplicate_of = None
        photo.save(update_fields=["duplicate_of", "warnings"])
        cleared += 1
    return cleared
