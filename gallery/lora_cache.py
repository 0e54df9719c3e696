"""The GPU worker's local LoRA files for generation (WORK_DIR/lora-cache), kept bounded.

diffusers reads a LoRA from a local path and picks its reader by the extension, while stored
names may be cut short (`UserUploadPath` keeps 10 characters of suffix: `.safetenso`). So each
training's file gets a proper `.safetensors` name here: a symbolic link with local storage (no
space), a full copy with remote storage (S3), made once and reused.

Copies are bounded two ways. Size: past `LORA_CACHE_MB` the least recently used copies go,
except any used in the last `RECENT_S` seconds (the request being served, or one another worker
on this machine is serving). Existence: when a GPU worker starts, and every 10 minutes while it
runs (`gallery.tasks`), entries whose training no longer exists, or no longer has a LoRA, are
removed whatever their age, so a deleted training's weights do not outlive it on a GPU machine
by more than that; so are broken links and abandoned partial copies.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from django.conf import settings

from trainer.models import TrainingJob

log = logging.getLogger("gallery.worker")

RECENT_S = 600.0  # a copy used this recently is never pruned for size
PARTIAL = ".part"


def cache_root() -> Path:
    return Path(settings.WORK_DIR) / "lora-cache"


def cache_name(stored_name: str) -> str:
    """The cache entry's file name for a stored file name (unique per stored name)."""
    return Path(stored_name.replace("/", "_")).stem + ".safetensors"


def local_lora_path(job: TrainingJob) -> Path:
    """A `.safetensors` path on this machine for a training's LoRA file, marked as just used."""
    field = job.lora_file
    target = cache_root() / cache_name(field.name)
    if target.exists():
        os.utime(target, follow_symlinks=False)  # recently used: pruned last
        return target
    if target.is_symlink():  # pointing at a file that was deleted since
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        source = Path(field.path)
    except NotImplementedError:  # remote storage: copy once, atomically, then keep the cache bounded
        partial = target.with_name(f"{target.name}.{os.getpid()}{PARTIAL}")  # one per process
        try:
            with field.open("rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.rename(target)
        finally:
            partial.unlink(missing_ok=True)
        prune(keep={target})
        return target
    if not source.is_file():
        return source  # the request check reports the missing file by its stored path
    target.symlink_to(source)
    return target


def _entries() -> list[tuple[Path, os.stat_result]]:
    root = cache_root()
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        try:
            found.append((entry, entry.lstat()))
        except FileNotFoundError:  # removed by another worker meanwhile
            continue
    return found


def prune(keep: frozenset[Path] | set[Path] = frozenset()) -> list[str]:
    """Remove the least recently used copies until they fit in LORA_CACHE_MB; returns the names.

    Links take no space and are left alone; so are `keep` and anything used in the last RECENT_S."""
    limit = int(settings.LORA_CACHE_MB) * 2**20
    copies = sorted(
        ((path, stat) for path, stat in _entries() if path.is_file() and not path.is_symlink() and not path.name.endswith(PARTIAL)),
        key=lambda item: item[1].st_mtime,
    )  # fmt: skip
    total = sum(stat.st_size for _, stat in copies)
    removed = []
    recent = time.time() - RECENT_S
    for path, stat in copies:
        if total <= limit:
            break
        if path in keep or stat.st_mtime > recent:
            continue
        path.unlink(missing_ok=True)
        total -= stat.st_size
        removed.append(path.name)
    if removed:
        log.info("lora cache over %s MB: removed %d least recently used copies", settings.LORA_CACHE_MB, len(removed))
    return removed


def sweep() -> list[str]:
    """At worker start and every 10 minutes: remove entries of trainings that are gone (or have no LoRA), broken links
    and partial copies abandoned over RECENT_S ago, then prune to size. Returns the names removed."""
    entries = _entries()
    if not entries:
        return []
    wanted = {cache_name(name) for name in TrainingJob.objects.exclude(lora_file="").values_list("lora_file", flat=True)}
    stale_partial = time.time() - RECENT_S
    removed = []
    for path, stat in entries:
        if path.name.endswith(PARTIAL):
            gone = stat.st_mtime < stale_partial  # a younger one may be another worker's copy in progress
        else:
            gone = path.name not in wanted or (path.is_symlink() and not path.exists())
        if gone:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    if removed:
        log.info("lora cache: removed %d entries of deleted trainings, broken links or partial copies", len(removed))
    return removed + prune()
