"""Near-duplicates: copies of one picture (resized, re-compressed, slightly cropped, lightly graded)
are flagged; the same composition in other colours is a new picture and is not."""

from __future__ import annotations

import io
import random

import imagehash
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from trainer.models import Photo
from trainer.photo_duplicates import NEAR_DUPLICATE_DISTANCE, colour_grid, colours_differ
from trainer.photos import PhotoRejected, photo_ingest
from trainer.selectors import dataset_health

pytestmark = pytest.mark.django_db

RED, BLUE = (170, 40, 40), (40, 60, 170)


def scene(blanket: tuple[int, int, int] = RED) -> Image.Image:
    """A photo-like picture: a wall with a window, a pet lying on a blanket, speckled texture."""
    img = Image.new("RGB", (768, 576), (205, 200, 188))
    draw = ImageDraw.Draw(img)
    draw.rectangle([520, 40, 700, 220], fill=(150, 190, 225))  # window
    draw.rectangle([0, 300, 768, 576], fill=blanket)
    draw.ellipse([230, 250, 540, 520], fill=(95, 72, 52))  # body
    draw.ellipse([200, 170, 350, 310], fill=(105, 80, 60))  # head
    rng = random.Random(7)  # the same speckles in every version: only the blanket changes
    for _ in range(3000):
        x, y = rng.randrange(768), rng.randrange(576)
        shade = rng.randrange(-25, 26)
        r, g, b = img.getpixel((x, y))
        draw.point((x, y), fill=(r + shade, g + shade, b + shade))
    return img.filter(ImageFilter.GaussianBlur(1))


def stall() -> Image.Image:
    """A busy, colourful picture (a market stall, confetti): many small areas of strong colour."""
    rng = random.Random(20)
    img = Image.new("RGB", (768, 576), (120, 110, 100))
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x, y, size = rng.randrange(-40, 768), rng.randrange(-40, 576), rng.randrange(40, 160)
        draw.ellipse([x, y, x + size, y + size], fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    return img.filter(ImageFilter.GaussianBlur(1))


def shape(colour: tuple[int, int, int]) -> Image.Image:
    """A style-set picture: one flat circle on a light background."""
    img = Image.new("RGB", (512, 512), (240, 240, 235))
    ImageDraw.Draw(img).ellipse([150, 150, 362, 362], fill=colour)
    return img


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def layout_distance(a: Image.Image, b: Image.Image) -> int:
    return imagehash.phash(a) - imagehash.phash(b)


def flagged(photo: Photo, original: Photo) -> bool:
    warning = f"almost the same as {original.original_name}"
    return photo.duplicate_of == original and any(warning in w for w in photo.warnings)


def not_flagged(photo: Photo) -> bool:
    return photo.duplicate_of is None and not any("almost the same" in w for w in photo.warnings)


def test_resized_and_recompressed_copy_is_flagged(dataset):
    first = photo_ingest(dataset=dataset, data=encode(scene()), name="mira.png")
    copy = encode(scene().resize((480, 360)), "JPEG", quality=70)
    assert flagged(photo_ingest(dataset=dataset, data=copy, name="mira-small.jpg"), first)


def test_exact_duplicate_is_refused_and_the_same_pixels_saved_again_are_flagged(dataset):
    data = encode(scene())
    first = photo_ingest(dataset=dataset, data=data, name="mira.png")
    with pytest.raises(PhotoRejected, match="exact duplicate of mira.png"):
        photo_ingest(dataset=dataset, data=data, name="again.png")
    resaved = encode(scene(), compress_level=1)  # other bytes, the very same pixels
    assert resaved != data
    assert flagged(photo_ingest(dataset=dataset, data=resaved, name="resaved.png"), first)


def test_slightly_cropped_copy_is_flagged(dataset):
    first = photo_ingest(dataset=dataset, data=encode(scene()), name="mira.png")
    cropped = scene().crop((15, 12, 753, 564))  # 2% off each side
    assert flagged(photo_ingest(dataset=dataset, data=encode(cropped, "JPEG", quality=85), name="crop.jpg"), first)


def test_a_cropped_copy_of_a_busy_colourful_picture_is_flagged(dataset):
    """A crop moves every colour patch a little: compared cell by cell in place, many would
    "change colour"; compared with the cells around the same place, none does."""
    first = photo_ingest(dataset=dataset, data=encode(stall()), name="stall.png")
    cropped = stall().crop((23, 17, 745, 559))  # 3% off each side
    assert flagged(photo_ingest(dataset=dataset, data=encode(cropped, "JPEG", quality=85), name="crop.jpg"), first)


def test_a_copy_is_matched_with_the_photo_it_is_closest_to(dataset):
    photo_ingest(dataset=dataset, data=encode(scene()), name="mira.png")
    cropped = scene().crop((15, 12, 753, 564))
    crop = photo_ingest(dataset=dataset, data=encode(cropped, "JPEG", quality=95), name="crop.jpg")
    again = encode(cropped.resize((600, 450)), "JPEG", quality=80)
    assert flagged(photo_ingest(dataset=dataset, data=again, name="crop-small.jpg"), crop)


def test_a_light_grade_of_the_same_shot_is_still_flagged(dataset):
    """A little warmer and brighter is the same picture to the model: it would still be seen twice."""
    first = photo_ingest(dataset=dataset, data=encode(scene()), name="mira.png")
    r, g, b = scene().split()
    warmer = Image.merge("RGB", (r.point(lambda v: min(255, int(v * 1.05))), g, b.point(lambda v: int(v * 0.95))))
    graded = ImageEnhance.Brightness(warmer).enhance(1.08)
    assert flagged(photo_ingest(dataset=dataset, data=encode(graded, "JPEG", quality=90), name="graded.jpg"), first)


def test_the_same_composition_in_other_colours_is_not_flagged(dataset):
    """The pet on a red blanket, then on a blue one: alike in layout, but a new picture to learn."""
    assert layout_distance(scene(RED), scene(BLUE)) <= NEAR_DUPLICATE_DISTANCE  # the layout check alone flags it
    photo_ingest(dataset=dataset, data=encode(scene(RED)), name="red.png")
    blue = photo_ingest(dataset=dataset, data=encode(scene(BLUE), "JPEG", quality=90), name="blue.jpg")
    assert not_flagged(blue)
    health = dataset_health(dataset)
    assert health.near_duplicates == 0 and not any("near-duplicate" in p for p in health.problems)


def test_a_style_set_of_one_shape_in_many_colours_has_no_duplicates_but_a_copy_finds_its_own(dataset):
    colours = [(220, 30, 30), (30, 60, 220), (40, 170, 60), (240, 200, 40), (150, 60, 170), (30, 30, 30)]
    # The layout check alone would flag green, yellow, purple and black as copies of earlier ones.
    alike = [any(layout_distance(shape(c), shape(e)) <= NEAR_DUPLICATE_DISTANCE for e in colours[:i])
             for i, c in enumerate(colours)]
    assert alike == [False, False, True, True, True, True]
    photos = [photo_ingest(dataset=dataset, data=encode(shape(c)), name=f"shape{i}.png") for i, c in enumerate(colours)]
    assert all(not_flagged(photo) for photo in photos)
    copy = encode(shape(colours[3]).resize((400, 400)), "JPEG", quality=80)
    assert flagged(photo_ingest(dataset=dataset, data=copy, name="yellow-again.jpg"), photos[3])


def test_a_black_and_white_copy_is_a_different_colouring(dataset):
    photo_ingest(dataset=dataset, data=encode(scene()), name="mira.png")
    grey = ImageOps.grayscale(scene()).convert("RGB")
    assert not_flagged(photo_ingest(dataset=dataset, data=encode(grey), name="mira-bw.png"))


def test_duplicates_are_found_with_remote_storage_too(dataset, remote_storage):
    first = photo_ingest(dataset=dataset, data=encode(scene()), name="mira.png")
    copy = encode(scene().resize((480, 360)), "JPEG", quality=70)
    assert flagged(photo_ingest(dataset=dataset, data=copy, name="mira-small.jpg"), first)
    assert not_flagged(photo_ingest(dataset=dataset, data=encode(scene(BLUE)), name="blue.png"))


def test_a_photo_whose_thumbnail_cannot_be_read_is_compared_by_layout_alone(dataset):
    """As before the colour check: better an extra warning than a missed duplicate."""
    first = photo_ingest(dataset=dataset, data=encode(scene(RED)), name="red.png")
    first.thumbnail.storage.delete(first.thumbnail.name)
    assert flagged(photo_ingest(dataset=dataset, data=encode(scene(BLUE)), name="blue.png"), first)


def test_thumbnails_read_per_upload_are_capped(dataset, monkeypatch):
    """Every shape of a style set matches by layout: an upload reads only the closest few."""
    import trainer.photo_duplicates as duplicates

    for i, colour in enumerate([(40, 170, 60), (240, 200, 40), (200, 60, 120)]):
        photo_ingest(dataset=dataset, data=encode(shape(colour)), name=f"shape{i}.png")
    reads = []
    stored_grid = duplicates._stored_grid
    monkeypatch.setattr(duplicates, "MAX_COLOUR_CHECKS", 2)
    monkeypatch.setattr(duplicates, "_stored_grid", lambda photo: reads.append(photo) or stored_grid(photo))
    black = photo_ingest(dataset=dataset, data=encode(shape((30, 30, 30))), name="black.png")
    assert len(reads) == 2 and not_flagged(black)


def test_colour_grids_of_a_copy_agree_and_of_a_recolouring_differ():
    def grid(img: Image.Image) -> list[tuple[float, float, float]]:
        thumb = img.copy()
        thumb.thumbnail((384, 384))
        return colour_grid(encode(thumb, "JPEG", quality=82))

    red = grid(scene(RED))
    assert not colours_differ(red, grid(scene(RED).resize((500, 375))))
    assert colours_differ(red, grid(scene(BLUE)))
    assert colours_differ(grid(shape((220, 30, 30))), grid(shape((30, 60, 220))))


def test_recheck_duplicates_clears_flags_the_layout_only_rule_set_and_keeps_real_ones(dataset):
    """After an upgrade: a photo an older release flagged only for its layout loses the flag (and
    its health warning); a real copy keeps it."""
    from django.core.management import call_command

    red = photo_ingest(dataset=dataset, data=encode(scene(RED)), name="red.png")
    blue = photo_ingest(dataset=dataset, data=encode(scene(BLUE), "JPEG", quality=90), name="blue.jpg")
    copy = photo_ingest(dataset=dataset, data=encode(scene(RED).resize((480, 360)), "JPEG", quality=70), name="copy.jpg")
    assert flagged(copy, red)
    # As the layout-only rule left it:
    Photo.objects.filter(pk=blue.pk).update(duplicate_of=red, warnings=["looks almost the same as red.png"])
    assert dataset_health(dataset).near_duplicates == 2
    out = io.StringIO()
    call_command("recheck_duplicates", stdout=out)
    assert "1 photo(s) no longer flagged" in out.getvalue()
    blue.refresh_from_db()
    copy.refresh_from_db()
    assert not_flagged(blue) and flagged(copy, red)
    assert dataset_health(dataset).near_duplicates == 1
