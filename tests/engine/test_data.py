from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from trainer.engine import DatasetError
from trainer.engine.data import load_dataset, load_image, make_buckets, nearest_bucket

from .conftest import make_image


def test_an_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no images"):
        load_dataset(tmp_path, 64, "", False)


def test_an_unreadable_image_is_named(tmp_path: Path) -> None:
    make_image(tmp_path / "good.png", (64, 64), (10, 10, 10))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg"):
        load_dataset(tmp_path, 64, "", False)


def test_a_truncated_image_is_refused_before_any_model_loads(tmp_path: Path) -> None:
    """A JPEG cut off mid-upload has a valid header; only decoding it shows the damage."""
    make_image(tmp_path / "whole.jpg", (256, 256), (200, 30, 30))
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cannot read image cut.jpg: .*truncated"):
        load_dataset(tmp_path, 64, "", False)


def test_captions_without_the_trigger_are_refused_or_fixed_on_request(tmp_path: Path) -> None:
    make_image(tmp_path / "a.png", (64, 64), (10, 10, 10))
    make_image(tmp_path / "b.png", (64, 64), (10, 10, 10))
    make_image(tmp_path / "c.png", (64, 64), (10, 10, 10))
    (tmp_path / "a.txt").write_text("a photo of zxq dog")
    (tmp_path / "b.txt").write_text("a photo of a dog")
    with pytest.raises(DatasetError, match=r"1 of 3 captions lack the trigger word 'zxq' \(b.txt\).*add_trigger_to_captions"):
        load_dataset(tmp_path, 64, "zxq", False)
    captions = {e.image_path.name: e.caption for e in load_dataset(tmp_path, 64, "zxq", True)}
    # c.png has no caption file: the trigger alone is its caption.
    assert captions == {"a.png": "a photo of zxq dog", "b.png": "zxq, a photo of a dog", "c.png": "zxq"}


def test_exif_orientation_decides_the_bucket_and_the_pixels(tmp_path: Path) -> None:
    """A phone photo stored wide with Orientation 6 (rotate 90 degrees clockwise to show) is trained upright."""
    stored = Image.new("RGB", (96, 48), (40, 60, 200))
    ImageDraw.Draw(stored).rectangle((0, 0, 23, 23), fill=(230, 20, 20))  # red marker, stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    (example,) = load_dataset(tmp_path, 64, "", False)
    assert example.size == (48, 96)
    assert example.bucket[0] < example.bucket[1]
    image = load_image(example.image_path, example.bucket)
    assert image.size == example.bucket
    # shown upright, the stored top-left corner is the top-right one; a crop may trim only the middle
    width, height = image.size
    corners = {"top-left": (2, 2), "top-right": (width - 3, 2), "bottom-left": (2, height - 3),
               "bottom-right": (width - 3, height - 3)}  # fmt: skip
    red = {name for name, xy in corners.items() if _is_red(image.getpixel(xy))}
    assert red == {"top-right"}, {name: image.getpixel(xy) for name, xy in corners.items()}


def _is_red(pixel: tuple[int, int, int]) -> bool:
    r, g, b = pixel
    return r > 180 and g < 80 and b < 80


def test_buckets_are_multiples_of_16_around_the_target_area() -> None:
    for resolution in (64, 256, 1024):
        buckets = make_buckets(resolution)
        assert (resolution, resolution) in buckets
        for width, height in buckets:
            assert width % 16 == 0 and height % 16 == 0
            assert 0.5 <= width / height <= 2.0
            assert width * height <= resolution * resolution
    assert nearest_bucket((1920, 1080), make_buckets(1024)) in {(1344, 768), (1280, 704), (1344, 704)}
    with pytest.raises(DatasetError, match="multiple of 16"):
        make_buckets(100)


def test_the_log_names_images_smaller_than_their_bucket(tmp_path: Path) -> None:
    """An image enlarged to cover its bucket trains softer than the rest; the run's log says which."""
    from trainer.engine.data import describe

    make_image(tmp_path / "big.png", (128, 128), (200, 30, 30))
    make_image(tmp_path / "small.png", (40, 40), (30, 200, 30))
    for name in ("big", "small"):
        (tmp_path / f"{name}.txt").write_text("zxq")
    text = describe(load_dataset(tmp_path, 64, "zxq", False))
    assert "1 example(s) upscaled to their bucket" in text and "small.png, 40x40 to 64x64" in text
    assert "upscaled" not in describe(load_dataset(tmp_path, 32, "zxq", False))
