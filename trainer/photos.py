"""Photo ingest: check an uploaded file (or each image in a .zip) and store it as a Photo.

Every check says why a file was refused, in words a person can act on. Accepted photos are
stored three times: the untouched original, an RGB training copy with its EXIF orientation
applied and every piece of metadata (GPS location included) dropped, and a small thumbnail.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import logging
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import IO

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from PIL import Image, ImageOps, ImageStat, UnidentifiedImageError

from flux_studio.files import STORAGE_ERRORS
from trainer.engine.data import eight_bit  # Pillow only, no torch
from trainer.models import CaptionSource, Dataset, Photo
from trainer.photo_duplicates import FLAT_STDDEV, layout_hash, near_duplicate

log = logging.getLogger(__name__)

try:  # iPhone photos; registering teaches Pillow to open HEIC/HEIF
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a dependency; stay usable without it
    log.warning("pillow-heif is missing: HEIC photos will be refused")

# Pillow format names we accept. AVIF only when this Pillow build can decode it.
ALLOWED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "HEIF", "GIF"}
if "AVIF" in Image.registered_extensions().values():
    ALLOWED_FORMATS.add("AVIF")
FORMAT_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "HEIF": ".heic", "GIF": ".gif",
                   "AVIF": ".avif"}
FORMAT_NAMES = "JPEG, PNG, WebP, HEIC/HEIF, GIF" + (", AVIF" if "AVIF" in ALLOWED_FORMATS else "")
MIN_SIDE = 256  # below this a photo teaches the model blur
MAX_CAPTION = 2000  # characters a caption may have when typed or bulk-edited (trainer.datasets checks it)
MAX_CAPTION_FILE = 64 * 1024  # bytes of a zip's .txt caption read at all: no stored caption is longer
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # control characters (not whitespace)


def tidy_caption(text: str) -> str:
    """A caption as stored: control characters dropped (PostgreSQL refuses NUL, and none means
    anything in a caption) and whitespace runs as one space."""
    return " ".join(_CONTROL.sub("", text).split())
WARN_SIDE = 512  # FLUX trains at 512-1024 px: smaller photos are upscaled and go soft
# The engine's aspect buckets span 1:2 to 2:1 (trainer.engine.data.make_buckets): a longer photo is
# cropped to 2:1, and past this ratio so much goes that the person should choose the crop.
WARN_ASPECT = 2.5
MAX_PIXELS = 64_000_000  # about 8000 x 8000: more is a decompression bomb, not a photo
THUMB_SIDE = 384
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".gif", ".avif", ".jfif"}


class PhotoRejected(Exception):
    """A file that cannot join the dataset; str(exc) is the reason shown next to it."""


DATASET_GONE = "the dataset was deleted while this upload ran; nothing was kept"


class DatasetGone(PhotoRejected):
    """The dataset was deleted while its photos were being uploaded: the photo was not kept.

    A PhotoRejected, so a zip's remaining members are refused quickly one by one; the upload
    views then check the dataset once more and answer that it is gone.
    """

    def __init__(self) -> None:
        super().__init__(DATASET_GONE)


def dataset_gone(dataset: Dataset) -> bool:
    return not Dataset.objects.filter(pk=dataset.pk).exists()


@dataclass
class IngestOutcome:
    """What happened to one file (or one zip member): a photo, or a rejection reason."""

    name: str
    photo: Photo | None = None
    reason: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.photo is not None


def max_photo_bytes() -> int:
    return settings.MAX_PHOTO_MB * 1024 * 1024


def max_zip_bytes() -> int:
    """A zip may hold at most a full dataset of photos at the per-photo limit (compressed or
    not): more cannot all be kept, and unpacking it would only fill the disk and the CPU."""
    return settings.MAX_PHOTOS_PER_DATASET * max_photo_bytes()


def _zip_limit_text() -> str:
    mb = settings.MAX_PHOTOS_PER_DATASET * settings.MAX_PHOTO_MB
    return (f"{mb} MB, a full dataset ({settings.MAX_PHOTOS_PER_DATASET} photos × {settings.MAX_PHOTO_MB} MB); "
            "split it into smaller zips")


def upload_ingest(*, dataset: Dataset, upload: IO[bytes], name: str, size: int) -> list[IngestOutcome]:
    """Ingest one uploaded file: a .zip gives one outcome per image inside, else one outcome."""
    if PurePosixPath(name).suffix.lower() == ".zip" or _looks_like_zip(upload):
        if size > max_zip_bytes():
            return [IngestOutcome(name, reason=f"this zip is {size / 1048576:.0f} MB, over the limit of {_zip_limit_text()}")]
        return zip_ingest(dataset=dataset, upload=upload, name=name)
    if size > max_photo_bytes():
        return [IngestOutcome(name, reason=f"{size / 1048576:.1f} MB is over the {settings.MAX_PHOTO_MB} MB limit per photo")]
    try:
        photo = photo_ingest(dataset=dataset, data=upload.read(), name=name)
    except PhotoRejected as exc:
        return [IngestOutcome(name, reason=str(exc))]
    return [IngestOutcome(name, photo=photo, warnings=list(photo.warnings))]


def _looks_like_zip(upload: IO[bytes]) -> bool:
    head = upload.read(4)
    upload.seek(0)
    return head == b"PK\x03\x04"


def zip_ingest(*, dataset: Dataset, upload: IO[bytes], name: str) -> list[IngestOutcome]:
    """Each image of a zip becomes a photo; `photo.txt` next to `photo.jpg` is its caption.

    macOS resource forks (`__MACOSX/`, `._*`), hidden files and other junk are skipped
    silently; any other non-image file, and any entry with an unsafe path (absolute, or going
    up with `..`), is reported so the person knows it was not used. Nothing is extracted to
    disk: members are read into memory, so no path can write anywhere.
    """
    try:
        archive = zipfile.ZipFile(upload)
    except zipfile.BadZipFile:
        return [IngestOutcome(name, reason="not a readable .zip archive")]
    with archive:
        files = [m for m in archive.infolist() if not m.is_dir()]
        outcomes = [IngestOutcome(f"{name} › {m.filename}", reason=_unsafe_path(m.filename))
                    for m in files if _unsafe_path(m.filename)]
        members = [m for m in files if not _unsafe_path(m.filename) and not _is_junk(m.filename)]
        too_big = _zip_too_big(members)
        if too_big:
            return [IngestOutcome(name, reason=too_big)]
        captions = _zip_captions(archive, members)
        room = settings.MAX_PHOTOS_PER_DATASET - dataset.photos.count()  # a guide: photo_ingest decides under a lock
        for member in members:
            path = PurePosixPath(member.filename)
            if path.suffix.lower() == ".txt":
                continue
            label = f"{name} › {member.filename}"
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                outcomes.append(IngestOutcome(label, reason=f"not an image ({path.suffix or 'no extension'}); skipped"))
                continue
            if room <= 0:  # not even read: the ones before it filled the dataset
                outcomes.append(IngestOutcome(label, reason=f"not added: the dataset is full "
                                                            f"({settings.MAX_PHOTOS_PER_DATASET} photos)"))
                continue
            if member.file_size > max_photo_bytes():
                outcomes.append(IngestOutcome(label, reason=f"over the {settings.MAX_PHOTO_MB} MB limit per photo"))
                continue
            caption = captions.get(str(path.with_suffix("")).lower())
            try:
                # file_size was checked above; read at most that much so a lying header cannot balloon
                with archive.open(member) as handle:
                    data = handle.read(max_photo_bytes() + 1)
                photo = photo_ingest(dataset=dataset, data=data, name=path.name,
                                     caption=caption.text if caption else None)
                room -= 1
            except PhotoRejected as exc:
                outcomes.append(IngestOutcome(label, reason=str(exc)))
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as exc:
                outcomes.append(IngestOutcome(label, reason=f"cannot be extracted from the zip ({exc})"))
            else:
                notes = list(photo.warnings) + ([caption.note] if caption and caption.note else [])
                outcomes.append(IngestOutcome(label, photo=photo, warnings=notes))
    if not outcomes:
        outcomes.append(IngestOutcome(name, reason="the zip holds no images"))
    return outcomes


ZIP_IMAGES_FACTOR = 5  # a zip of more than this many datasets' worth of images is refused whole


def _zip_too_big(members: list[zipfile.ZipInfo]) -> str:
    """Why the whole zip is refused before anything is unpacked, or "" when it may be read.

    Sizes are the ones the zip declares; reads are capped at the per-photo limit as well, so a
    zip that lies about them still cannot unpack more than this.
    """
    images = [m for m in members if PurePosixPath(m.filename).suffix.lower() in IMAGE_SUFFIXES]
    # A few more images than the dataset has room for: the first ones are kept, the rest listed as
    # not added (zip_ingest). Far more is not a dataset someone meant to upload whole.
    if len(images) > ZIP_IMAGES_FACTOR * settings.MAX_PHOTOS_PER_DATASET:
        return (f"the zip holds {len(images)} images, far more than a dataset takes "
                f"({settings.MAX_PHOTOS_PER_DATASET}): split it into smaller zips")
    unpacked = sum(m.file_size for m in members)
    if unpacked > max_zip_bytes():
        return f"the zip unpacks to {unpacked / 1048576:.0f} MB, over the limit of {_zip_limit_text()}"
    return ""


def _unsafe_path(filename: str) -> str:
    """Why a zip entry's path is unsafe (absolute, a drive, or going up with ".."), or "".
    Zips made on Windows may separate folders with backslashes."""
    path = filename.replace("\\", "/")
    if path.startswith("/") or PureWindowsPath(path).drive:
        return "unsafe path in the zip (absolute); skipped"
    if ".." in PurePosixPath(path).parts:
        return "unsafe path in the zip (goes up a folder with ..); skipped"
    return ""


def _is_junk(filename: str) -> bool:
    """macOS resource forks, hidden files and folders, and desktop clutter (".." is not a hidden
    name: an unsafe path is reported, see _unsafe_path)."""
    parts = PurePosixPath(filename).parts
    return (
        any(part == "__MACOSX" or (part.startswith(".") and part != "..") for part in parts)
        or parts[-1].lower() in JUNK_NAMES
    )


@dataclass(frozen=True)
class _ZipCaption:
    text: str
    note: str = ""  # how it was read, when that is worth telling (not UTF-8)


def _zip_captions(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> dict[str, _ZipCaption]:
    """Captions from .txt files keyed by their lower-cased path without the suffix."""
    captions = {}
    for member in members:
        path = PurePosixPath(member.filename)
        if path.suffix.lower() != ".txt" or member.file_size > MAX_CAPTION_FILE:
            continue
        text, note = caption_text(archive.read(member))
        text = tidy_caption(text)
        if len(text) > MAX_CAPTION:  # kept whole (nothing is lost), but the editors refuse it as it is
            long = (f"caption is {len(text):,} characters, over the {MAX_CAPTION:,} an edited caption may have: "
                    "shorten it before editing it alone or in bulk")
            note = f"{note}; {long}" if note else long
        captions[str(path.with_suffix("")).lower()] = _ZipCaption(text, note)
    return captions


def caption_text(raw: bytes) -> tuple[str, str]:
    """A caption file's text and, when it was not UTF-8, a note saying how it was read.

    UTF-8 (with or without a BOM) is read strictly; UTF-16 needs its BOM; anything else is taken
    as Windows-1252, which covers Latin-1 and what Windows editors save as "ANSI" in Western
    Europe ("café" is b"caf\xe9" there, and invalid UTF-8).
    """
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16"), ""
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8-sig"), ""
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "caption file is not UTF-8: read as Windows-1252 (Latin-1)"
    except UnicodeDecodeError:  # one of the 5 bytes Windows-1252 leaves undefined: plain Latin-1 reads every byte
        return raw.decode("latin-1"), "caption file is not UTF-8: read as Latin-1"


@dataclass
class _Checked:
    image: Image.Image
    format: str
    width: int
    height: int
    warnings: list[str]


def check_image(data: bytes) -> _Checked:
    """Open and verify image bytes, or raise PhotoRejected saying what is wrong."""
    if len(data) > max_photo_bytes():
        raise PhotoRejected(f"over the {settings.MAX_PHOTO_MB} MB limit per photo")
    if not data:
        raise PhotoRejected("the file is empty (0 bytes): it may not have finished copying or downloading")
    with warnings.catch_warnings():
        # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; we refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            probe = Image.open(io.BytesIO(data))
            fmt = (probe.format or "").upper()
            if fmt not in ALLOWED_FORMATS:
                raise PhotoRejected(f"{fmt or 'this'} format is not accepted; use {FORMAT_NAMES}")
            if probe.width * probe.height > MAX_PIXELS:
                raise PhotoRejected(f"{probe.width}×{probe.height} is too many pixels (a decompression bomb?)")
            probe.verify()  # checks the structure (CRCs, truncation) without decoding everything
            image = Image.open(io.BytesIO(data))  # verify() leaves the image unusable: reopen
            image.seek(0)  # GIF: the first frame
            image.load()
        except PhotoRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise PhotoRejected("too many pixels to decode safely (a decompression bomb?)") from None
        except (UnidentifiedImageError, SyntaxError):
            raise PhotoRejected(f"not an image Pillow can read; use {FORMAT_NAMES}") from None
        except (OSError, ValueError, EOFError) as exc:
            raise PhotoRejected(f"the image is damaged or truncated ({exc})") from None
    image = eight_bit(ImageOps.exif_transpose(image))  # width/height as the person sees; 16-bit grey scaled, not clipped
    width, height = image.size
    short = min(width, height)
    if short < MIN_SIDE:
        raise PhotoRejected(f"{width}×{height} is too small: the short side must be at least {MIN_SIDE} px")
    notes = []
    if short < WARN_SIDE:
        notes.append(f"small ({width}×{height}): under {WARN_SIDE} px it will train soft")
    if max(width, height) / short > WARN_ASPECT:
        lost = round(100 * (1 - 2 * short / max(width, height)))
        notes.append(f"very {'wide' if width > height else 'tall'} ({width}×{height}): training crops it to 2:1, "
                     f"about {lost}% of it is cut away; crop it yourself to keep the subject")
    return _Checked(image, "JPEG" if fmt == "MPO" else fmt, width, height, notes)


def _training_copy(image: Image.Image) -> bytes:
    """RGB JPEG of the oriented image without EXIF/XMP (no location); the ICC profile stays."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))  # transparent → white, not black
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        rgb = background
    else:
        rgb = image.convert("RGB")
    out = io.BytesIO()
    icc = image.info.get("icc_profile")
    rgb.save(out, "JPEG", quality=95, subsampling=0, **({"icc_profile": icc} if icc else {}))
    return out.getvalue()


def _thumbnail(image: Image.Image) -> bytes:
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=82)
    return out.getvalue()


def _nearly_one_colour(image: Image.Image) -> bool:
    """A (nearly) flat image, in every colour channel. (A drawing whose colours share one
    brightness is not flat, though its grey version nearly is.)"""
    small = image.convert("RGB").resize((32, 32))
    return max(ImageStat.Stat(small).stddev) < FLAT_STDDEV


def photo_ingest(*, dataset: Dataset, data: bytes, name: str, caption: str | None = None) -> Photo:
    """Check `data` and store it as a new photo of `dataset`; raises PhotoRejected with a reason
    (DatasetGone when the dataset was deleted meanwhile: then no file of the photo is kept)."""
    if dataset_gone(dataset):
        raise DatasetGone()
    if dataset.photos.count() >= settings.MAX_PHOTOS_PER_DATASET:
        raise PhotoRejected(f"the dataset already holds the maximum of {settings.MAX_PHOTOS_PER_DATASET} photos")
    digest = hashlib.sha256(data).hexdigest()
    twin = dataset.photos.filter(sha256=digest).first()
    if twin is not None:
        raise PhotoRejected(f"an exact duplicate of {twin.original_name}, already in this dataset")
    checked = check_image(data)
    flat = _nearly_one_colour(checked.image)
    thumbnail = _thumbnail(checked.image)
    phash = layout_hash(checked.image)  # None for a picture flat in brightness: stored empty, never matched
    near = near_duplicate(dataset=dataset, phash=phash, thumbnail=thumbnail) if phash is not None else None
    notes = list(checked.warnings)
    if flat:
        notes.append("almost a single colour: little for the LoRA to learn from")
    if near is not None:
        notes.append(f"looks almost the same as {near.original_name}")
    photo = Photo(
        dataset=dataset, original_name=name[:255], width=checked.width, height=checked.height,
        format=checked.format, size_bytes=len(data), sha256=digest, phash=str(phash or ""),
        duplicate_of=near, warnings=notes,
    )
    caption = tidy_caption(caption or "")
    if caption:
        photo.caption, photo.caption_source = caption, CaptionSource.FILE
    stem = PurePosixPath(name).stem[:40] or "photo"
    # Named by the format found in the bytes, never by the uploaded name's extension: the name decides
    # the type the file is served with, and "photo.html" must not come back as a web page.
    try:
        photo.original.save(f"{stem}{FORMAT_SUFFIXES.get(checked.format, '.img')}", ContentFile(data), save=False)
        photo.image.save(f"{stem}.jpg", ContentFile(_training_copy(checked.image)), save=False)
        photo.thumbnail.save(f"{stem}.jpg", ContentFile(thumbnail), save=False)
    except STORAGE_ERRORS as exc:  # a full disk, a missing bucket, the storage service away
        log.error("storing %s for dataset %s failed", name, dataset.pk, exc_info=True)
        try:
            photo_files_delete(photo)  # those stored before the failure
        except STORAGE_ERRORS:
            log.warning("could not remove the stored files of the failed upload %s", name, exc_info=True)
        raise PhotoRejected(f"the studio could not store this file ({type(exc).__name__}): nothing of it was kept; "
                            "try again later, or tell the studio's operator if it keeps failing") from None
    try:
        with transaction.atomic():
            # The page uploads 2-3 files at once: re-check the limit under a row lock so parallel
            # uploads cannot push the dataset past it.
            if not Dataset.objects.select_for_update().filter(pk=dataset.pk).exists():
                raise DatasetGone()  # deleted while this photo was being checked and stored
            if dataset.photos.count() >= settings.MAX_PHOTOS_PER_DATASET:
                raise PhotoRejected(f"the dataset already holds the maximum of {settings.MAX_PHOTOS_PER_DATASET} photos")
            photo.save()
    except IntegrityError:  # the same bytes arrived twice at once (two parallel uploads), or the dataset went
        photo_files_delete(photo)
        if dataset_gone(dataset):
            raise DatasetGone() from None
        raise PhotoRejected("an exact duplicate of a photo uploaded at the same moment") from None
    except PhotoRejected:
        photo_files_delete(photo)
        raise
    # Not dataset.save(): a dataset deleted since the photo was saved (which took the photo with
    # it) would make that fail with "did not affect any rows".
    now = timezone.now()
    if not Dataset.objects.filter(pk=dataset.pk).update(updated_at=now):
        photos_discard([photo], owner_id=dataset.owner_id)
        raise DatasetGone()
    dataset.updated_at = now
    return photo


def photos_discard(photos: list[Photo], *, owner_id: int) -> None:
    """Remove the files of photos just uploaded into a dataset that was deleted meanwhile (their
    rows went with it), except any file a training job of the owner names."""
    from trainer.datasets import images_in_training_snapshots  # it imports this module

    keep = images_in_training_snapshots(owner_id)
    for photo in photos:
        photo_files_delete(photo, keep=keep)


def photo_files_delete(photo: Photo, *, keep: frozenset[str] = frozenset()) -> None:
    """Remove a photo's stored files, except those named in `keep`; a file already gone is not
    an error."""
    for file in (photo.original, photo.image, photo.thumbnail):
        if file and file.name and file.name not in keep:
            try:
                file.storage.delete(file.name)
            except OSError:
                log.warning("could not delete %s", file.name, exc_info=True)
