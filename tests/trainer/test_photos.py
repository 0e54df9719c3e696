"""Photo ingest checks: each rejection has a reason; accepted photos are oriented and clean."""

from __future__ import annotations

import codecs
import io
import zipfile

import pytest
from PIL import Image

from tests.trainer.conftest import make_zip
from trainer.models import CaptionSource
from trainer.photos import PhotoRejected, check_image, photo_ingest, upload_ingest

pytestmark = pytest.mark.django_db


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_accepts_png_and_stores_original_training_copy_and_thumbnail(dataset, image_bytes):
    data = image_bytes(700, 520)
    photo = photo_ingest(dataset=dataset, data=data, name="cat.png")
    assert (photo.width, photo.height, photo.format) == (700, 520, "PNG")
    assert photo.original.read() == data
    assert Image.open(photo.image).format == "JPEG"
    thumb = Image.open(photo.thumbnail)
    assert max(thumb.size) <= 384
    assert photo.warnings == []
    assert photo.original.name.startswith(f"users/{dataset.owner_id}/originals/")


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "HEIF", "AVIF", "GIF"])
def test_accepts_each_allowed_format(dataset, fmt):
    img = Image.new("RGB", (300, 300), (30, 120, 200))
    photo = photo_ingest(dataset=dataset, data=_encode(img, fmt), name=f"x.{fmt.lower()}")
    assert photo.format == fmt and Image.open(photo.image).mode == "RGB"


def test_exif_orientation_applied_and_location_stripped(dataset):
    img = Image.new("RGB", (600, 300), (10, 200, 90))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° when shown
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 0.0)}  # GPS
    exif[0x010F] = "PhoneMaker"
    photo = photo_ingest(dataset=dataset, data=_encode(img, "JPEG", exif=exif), name="rot.jpg")
    assert (photo.width, photo.height) == (300, 600)
    stored = Image.open(photo.image)
    assert stored.size == (300, 600)
    assert not stored.getexif() and "exif" not in stored.info
    assert Image.open(photo.original).getexif().get(0x010F) == "PhoneMaker"  # original kept as is


@pytest.mark.parametrize("data, reason", [
    (b"definitely not an image", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not an image"),
    (b"", r"the file is empty \(0 bytes\)"),  # a copy or download that never finished
])
def test_rejects_non_images(data, reason):
    with pytest.raises(PhotoRejected, match=reason):
        check_image(data)


def test_rejects_truncated_image(image_bytes):
    with pytest.raises(PhotoRejected, match="damaged or truncated"):
        check_image(image_bytes(600, 600, fmt="PNG")[:-300])


def test_rejects_other_formats():
    with pytest.raises(PhotoRejected, match="BMP format is not accepted"):
        check_image(_encode(Image.new("RGB", (300, 300)), "BMP"))


def test_rejects_decompression_bomb():
    bomb = _encode(Image.new("1", (10000, 10000)), "PNG")  # ~15 kB that decodes to 100 MP
    with pytest.raises(PhotoRejected, match="too many pixels"):
        check_image(bomb)


def test_size_rules(image_bytes):
    with pytest.raises(PhotoRejected, match="too small"):
        check_image(image_bytes(300, 200))
    assert "small" in check_image(image_bytes(400, 400)).warnings[0]
    assert check_image(image_bytes(512, 700)).warnings == []
    assert check_image(image_bytes(1200, 520)).warnings == []  # 2.3:1, cropped a little to 2:1
    assert check_image(image_bytes(6000, 400)).warnings[-1].startswith(
        "very wide (6000×400): training crops it to 2:1, about 87% of it is cut away")
    assert check_image(image_bytes(600, 1800)).warnings[-1].startswith("very tall (600×1800)")


def test_file_size_limit(dataset, image_bytes, settings):
    settings.MAX_PHOTO_MB = 1
    big = _encode(Image.effect_noise((800, 800), 100).convert("RGB"), "PNG")
    assert len(big) > 1024 * 1024 or pytest.skip("noise compressed too well")
    [outcome] = upload_ingest(dataset=dataset, upload=io.BytesIO(big), name="big.png", size=len(big))
    assert not outcome.ok and "1 MB limit" in outcome.reason


def test_count_limit(dataset, add_photo, settings):
    settings.MAX_PHOTOS_PER_DATASET = 2
    add_photo(), add_photo()
    with pytest.raises(PhotoRejected, match="maximum of 2 photos"):
        add_photo()


def test_exact_duplicate_rejected_near_duplicate_flagged(dataset, image_bytes):
    data = image_bytes(600, 600, pattern=1)
    first = photo_ingest(dataset=dataset, data=data, name="a.png")
    with pytest.raises(PhotoRejected, match="exact duplicate of a.png"):
        photo_ingest(dataset=dataset, data=data, name="again.png")
    resized = _encode(Image.open(io.BytesIO(data)).resize((520, 520)), "JPEG", quality=80)
    near = photo_ingest(dataset=dataset, data=resized, name="smaller.jpg")
    assert near.duplicate_of == first and "almost the same as a.png" in near.warnings[0]


def test_zip_with_captions_skips_junk_and_reports_non_images(dataset, image_bytes):
    archive = make_zip({
        "set/one.png": image_bytes(300, 300, pattern=1), "set/one.txt": "a cat on a sofa\n",
        "set/two.JPG": _encode(Image.new("RGB", (300, 300), (9, 9, 9)), "JPEG"),
        "__MACOSX/set/._one.png": b"junk", "set/._two.JPG": b"junk", "set/.DS_Store": b"junk",
        "set/notes.pdf": b"%PDF", "set/tiny.png": image_bytes(64, 64),
    })
    outcomes = upload_ingest(dataset=dataset, upload=io.BytesIO(archive), name="set.zip", size=len(archive))
    by_name = {o.name.split(" › ")[-1]: o for o in outcomes}
    assert set(by_name) == {"set/one.png", "set/two.JPG", "set/notes.pdf", "set/tiny.png"}
    assert by_name["set/one.png"].photo.caption == "a cat on a sofa"
    assert by_name["set/one.png"].photo.caption_source == CaptionSource.FILE
    assert by_name["set/two.JPG"].photo.caption == ""
    assert "not an image" in by_name["set/notes.pdf"].reason
    assert "too small" in by_name["set/tiny.png"].reason
    assert dataset.photos.count() == 2


def test_bad_zip_is_reported(dataset):
    [outcome] = upload_ingest(dataset=dataset, upload=io.BytesIO(b"PK\x03\x04broken"), name="x.zip", size=10)
    assert not outcome.ok and "not a readable .zip" in outcome.reason


def test_animated_gif_keeps_its_first_frame(dataset):
    frames = [Image.new("RGB", (300, 300), color) for color in ((220, 30, 30), (30, 200, 40), (20, 40, 210))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    photo = photo_ingest(dataset=dataset, data=data, name="wave.gif")
    stored = Image.open(photo.image)
    assert photo.format == "GIF" and stored.format == "JPEG" and getattr(stored, "n_frames", 1) == 1
    red, green, blue = stored.convert("RGB").getpixel((150, 150))
    assert red > 180 and green < 80 and blue < 80  # the first (red) frame, not a later one


def test_zip_size_and_count_limits_refuse_the_whole_zip_with_a_reason(dataset, image_bytes, settings):
    settings.MAX_PHOTO_MB, settings.MAX_PHOTOS_PER_DATASET = 1, 2  # a zip may hold up to 2 MB
    stored = make_zip({"a.png": image_bytes(300, 300, pattern=1)})
    [outcome] = upload_ingest(dataset=dataset, upload=io.BytesIO(stored), name="big.zip", size=3 * 1024 * 1024)
    assert not outcome.ok and "this zip is 3 MB, over the limit of 2 MB" in outcome.reason and "split it" in outcome.reason

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.png", image_bytes(300, 300, pattern=1))
        archive.writestr("padding.txt", b"\0" * (3 * 1024 * 1024))  # a few kB that unpack to 3 MB
    data = bomb.getvalue()
    assert len(data) < 1024 * 1024
    [outcome] = upload_ingest(dataset=dataset, upload=io.BytesIO(data), name="bomb.zip", size=len(data))
    assert not outcome.ok and "unpacks to 3 MB, over the limit of 2 MB" in outcome.reason

    settings.MAX_PHOTOS_PER_DATASET = 1  # 5 datasets' worth at most; more is refused whole, unread
    many = make_zip({f"{n}.png": image_bytes(300, 300, pattern=n) for n in range(6)})
    [outcome] = upload_ingest(dataset=dataset, upload=io.BytesIO(many), name="many.zip", size=len(many))
    assert not outcome.ok and "holds 6 images, far more than a dataset takes (1)" in outcome.reason
    assert dataset.photos.count() == 0  # nothing was half-imported


def test_a_zip_with_more_images_than_the_dataset_has_room_for_keeps_what_fits(dataset, add_photo, image_bytes, settings):
    """The rest of the upload is kept: the first images fill the dataset, the others are listed as
    not added (and not even read)."""
    settings.MAX_PHOTOS_PER_DATASET = 3
    add_photo()
    archive = make_zip({f"{n}.png": image_bytes(300, 300, pattern=n + 10) for n in range(4)})
    outcomes = upload_ingest(dataset=dataset, upload=io.BytesIO(archive), name="pets.zip", size=len(archive))
    assert [o.ok for o in outcomes] == [True, True, False, False]
    assert all(o.reason == "not added: the dataset is full (3 photos)" for o in outcomes[2:])
    assert dataset.photos.count() == 3


def test_single_colour_photos_are_not_near_duplicates_of_each_other(dataset):
    """A flat picture's perceptual hash is all zeros: comparing it would flag every flat photo."""
    first = photo_ingest(dataset=dataset, data=_encode(Image.new("RGB", (300, 300), (200, 0, 200)), "PNG"), name="magenta.png")
    grey = photo_ingest(dataset=dataset, data=_encode(Image.new("RGB", (300, 300), (90, 90, 90)), "PNG"), name="grey.png")
    assert grey.duplicate_of is None and not any("almost the same" in w for w in grey.warnings)
    assert any("almost a single colour" in w for w in first.warnings)


def test_pictures_flat_only_in_brightness_are_not_near_duplicates_either(dataset):
    """Red beside a green of the same brightness: colourful, but its grey version (what the
    perceptual hash sees) is flat."""
    from PIL import ImageDraw

    def halves(box: tuple[int, int, int, int], green: int) -> bytes:
        img = Image.new("RGB", (300, 300), (255, 0, 0))
        ImageDraw.Draw(img).rectangle(box, fill=(0, green, 0))
        return _encode(img, "PNG")

    photo_ingest(dataset=dataset, data=halves((150, 0, 300, 300), green=130), name="left-right.png")
    other = photo_ingest(dataset=dataset, data=halves((0, 150, 300, 300), green=132), name="top-bottom.png")
    assert other.duplicate_of is None  # (132: a grey level above the red, which a hash would read as noise)
    assert not any("almost the same" in w or "single colour" in w for w in other.warnings)


def test_a_16_bit_greyscale_photo_keeps_its_tones_in_the_training_copy(dataset):
    import numpy as np

    ramp = np.tile(np.arange(300, dtype=np.uint16) * 218, (300, 1))  # 0 .. 65182, left to right
    photo = photo_ingest(dataset=dataset, data=_encode(Image.fromarray(ramp), "PNG"), name="scan16.png")
    copy = np.asarray(Image.open(photo.image).convert("L")).astype(int)
    assert abs(copy[150, 150] - (150 * 218 >> 8)) <= 3  # mid-grey stays mid-grey (it used to clip to white)
    assert copy[150, 10] < 20 and copy[150, 290] > 230


def test_unsafe_zip_paths_are_rejected_with_a_reason_and_junk_still_skipped(dataset, image_bytes):
    archive = make_zip({
        "../../evil.png": image_bytes(300, 300, pattern=1), "/etc/abs.png": image_bytes(300, 300, pattern=2),
        "set/..\\..\\win.png": image_bytes(300, 300, pattern=3), "C:/drive.png": image_bytes(300, 300, pattern=4),
        "set/../up.txt": "a caption beside nothing", "set/ok.png": image_bytes(300, 300, pattern=5),
        "__MACOSX/set/._ok.png": b"junk", "set/.hidden.png": b"junk", ".git/config": b"junk",
    })
    outcomes = upload_ingest(dataset=dataset, upload=io.BytesIO(archive), name="set.zip", size=len(archive))
    reasons = {o.name.split(" › ")[-1]: o.reason for o in outcomes}
    assert set(reasons) == {"../../evil.png", "/etc/abs.png", "set/..\\..\\win.png", "C:/drive.png", "set/../up.txt",
                            "set/ok.png"}, "junk is skipped silently; every other entry is accounted for"
    assert "goes up a folder" in reasons["../../evil.png"] and "goes up a folder" in reasons["set/..\\..\\win.png"]
    assert "goes up a folder" in reasons["set/../up.txt"]
    assert "absolute" in reasons["/etc/abs.png"] and "absolute" in reasons["C:/drive.png"]
    assert reasons["set/ok.png"] == "" and [p.original_name for p in dataset.photos.all()] == ["ok.png"]


@pytest.mark.parametrize("raw, note", [
    ("café crème".encode("utf-8"), ""),
    (codecs.BOM_UTF8 + "café crème".encode("utf-8"), ""),
    ("café crème".encode("latin-1"), "read as Windows-1252"),
    ("café crème ‘quoted’".encode("cp1252"), "read as Windows-1252"),
    ("café crème".encode("utf-16"), ""),  # Python writes the BOM
    (codecs.BOM_UTF16_BE + "café crème".encode("utf-16-be"), ""),
])
def test_zip_caption_files_in_legacy_encodings_are_read_not_garbled(dataset, image_bytes, raw, note):
    archive = make_zip({"a.png": image_bytes(300, 300, pattern=1), "a.txt": raw})
    [outcome] = upload_ingest(dataset=dataset, upload=io.BytesIO(archive), name="set.zip", size=len(archive))
    assert outcome.photo.caption.startswith("café crème") and "\ufffd" not in outcome.photo.caption
    assert outcome.photo.caption_source == CaptionSource.FILE
    assert [w for w in outcome.warnings if "UTF-8" in w] == ([f"caption file is not UTF-8: {note} (Latin-1)"] if note else [])


def test_a_zip_caption_too_long_to_edit_is_kept_whole_and_flagged(dataset, image_bytes):
    long_caption = "zqx " + "on a very long and winding road " * 70  # about 2,240 characters
    archive = make_zip({"a.png": image_bytes(300, 300, pattern=1), "a.txt": long_caption,
                        "b.png": image_bytes(300, 300, pattern=2), "b.txt": "zqx asleep"})
    first, second = upload_ingest(dataset=dataset, upload=io.BytesIO(archive), name="set.zip", size=len(archive))
    assert first.photo.caption == " ".join(long_caption.split())  # nothing is cut
    assert [w for w in first.warnings if "characters" in w] == [
        f"caption is {len(first.photo.caption):,} characters, over the 2,000 an edited caption may have: "
        "shorten it before editing it alone or in bulk"]
    assert not any("characters" in w for w in second.warnings)


@pytest.mark.parametrize("raw, caption, note", [
    ("zqx at the\x00 beach".encode("utf-16-le"), "zqx at the beach", ""),  # UTF-16 without its mark reads as UTF-8 with NULs
    (b"zqx caf\xe9 \x81 noir", "zqx caf\u00e9 noir", "caption file is not UTF-8: read as Latin-1"),  # 0x81: not Windows-1252
])
def test_zip_captions_lose_control_characters_and_never_get_replacement_characters(dataset, image_bytes, raw, caption, note):
    archive = make_zip({"a.png": image_bytes(300, 300, pattern=1), "a.txt": raw})
    [outcome] = upload_ingest(dataset=dataset, upload=io.BytesIO(archive), name="set.zip", size=len(archive))
    assert outcome.photo.caption == caption  # no NUL (PostgreSQL refuses them), no U+FFFD
    assert [w for w in outcome.warnings if "UTF-8" in w] == ([note] if note else [])


def test_an_image_named_like_a_web_page_is_stored_and_served_as_the_image_it_is(dataset, image_bytes, alice_client):
    """The uploaded name's extension never decides how the studio serves the file: a PNG called
    evil.html comes back as image/png, not as a page of this site that could run a script."""
    from django.urls import reverse

    photo = photo_ingest(dataset=dataset, data=image_bytes(300, 300, fmt="PNG"), name="evil.html")
    assert photo.original.name.endswith(".png") and photo.original_name == "evil.html"
    response = alice_client.get(reverse("trainer:photo_file", args=[dataset.pk, photo.pk, "original"]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff" and "sandbox" in response["Content-Security-Policy"]


def test_a_file_storage_cannot_store_is_rejected_with_its_reason_and_leaves_nothing(dataset, image_bytes, monkeypatch,
                                                                                     settings):
    """A full disk (or a bucket away) while a zip's second photo is stored: that photo is refused
    saying so, its files already stored are removed, and the zip's other photos are kept."""
    from django.core.files.storage import FileSystemStorage

    saved, real_save = [], FileSystemStorage._save

    def save(self, name, content):  # type: ignore[no-untyped-def]
        saved.append(name)
        if len(saved) == 5:  # the second photo's training copy, after its original
            raise OSError(28, "No space left on device")
        return real_save(self, name, content)

    monkeypatch.setattr(FileSystemStorage, "_save", save)
    archive = make_zip({"one.png": image_bytes(300, 300, pattern=1), "two.png": image_bytes(300, 300, pattern=2),
                        "three.png": image_bytes(300, 300, pattern=3)})
    outcomes = upload_ingest(dataset=dataset, upload=io.BytesIO(archive), name="set.zip", size=len(archive))
    assert [o.ok for o in outcomes] == [True, False, True]
    assert "could not store this file (OSError): nothing of it was kept" in outcomes[1].reason
    stored = {str(p.relative_to(settings.MEDIA_ROOT)) for p in settings.MEDIA_ROOT.rglob("*") if p.is_file()}
    kept = {f.name for photo in dataset.photos.all() for f in (photo.original, photo.image, photo.thumbnail)}
    assert dataset.photos.count() == 2 and stored == kept, "the refused photo's original is not left behind"
