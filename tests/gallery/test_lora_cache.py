"""The GPU worker's LoRA files for generation (WORK_DIR/lora-cache): named for diffusers, reused,
bounded in size, and gone once their training is."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from flux_studio import worker
from gallery import lora_cache
from gallery.lora_cache import local_lora_path
from trainer.models import TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def work(settings) -> Path:
    return settings.WORK_DIR / "lora-cache"


def _job_with_lora(owner, name: str, size: int) -> TrainingJob:
    job = TrainingJob.objects.create(owner=owner, name=name, state="succeeded", base_model="tiny", trigger_word="zqx",
                                     config={}, snapshot=[], total_steps=1, step=1)  # fmt: skip
    job.lora_file.save("lora.safetensors", ContentFile(os.urandom(size)), save=True)
    return job


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_local_storage_gets_a_link_named_for_diffusers(alice, work: Path) -> None:
    job = _job_with_lora(alice, "one", 1000)
    path = local_lora_path(job)
    assert path.parent == work and path.suffix == ".safetensors" and path.is_symlink()
    assert path.read_bytes() == Path(job.lora_file.path).read_bytes()
    assert local_lora_path(job) == path  # reused


def test_remote_storage_is_copied_once_and_reused(alice, work: Path, remote_storage: None) -> None:
    job = _job_with_lora(alice, "one", 1000)
    path = local_lora_path(job)
    assert path.is_file() and not path.is_symlink()
    assert path.read_bytes() == job.lora_file.open("rb").read()
    _age(path, 3600)
    assert local_lora_path(job) == path
    assert time.time() - path.stat().st_mtime < 60  # marked as just used
    assert sorted(p.name for p in work.iterdir()) == [path.name]  # no partial copy left behind


def test_copies_past_the_size_limit_go_least_recently_used_first(alice, work: Path, remote_storage: None, settings) -> None:
    settings.LORA_CACHE_MB = 1
    jobs = [_job_with_lora(alice, f"job {i}", 400 * 1024) for i in range(4)]
    paths = [local_lora_path(job) for job in jobs[:2]]
    _age(paths[0], 7200)
    _age(paths[1], 3600)
    local_lora_path(jobs[0])  # used again: now the most recent of the old ones
    paths.append(local_lora_path(jobs[2]))  # 1.2 MB: the least recently used (job 1) goes
    assert [p.exists() for p in paths] == [True, False, True]
    # what was used in the last 10 minutes stays, even over the limit (another request may be reading it)
    paths.append(local_lora_path(jobs[3]))
    assert all(p.exists() for p in (paths[0], paths[2], paths[3]))
    # a removed copy is simply made again when needed
    assert local_lora_path(jobs[1]).read_bytes() == jobs[1].lora_file.open("rb").read()


def test_a_copy_used_in_the_last_10_minutes_stays_over_the_limit_and_one_older_goes(alice, work: Path,
                                                                                    remote_storage: None, settings) -> None:
    settings.LORA_CACHE_MB = 1
    jobs = [_job_with_lora(alice, f"job {i}", 400 * 1024) for i in range(4)]
    paths = [local_lora_path(job) for job in jobs[:2]]
    _age(paths[0], 9 * 60 + 30)  # used 9.5 and 9 minutes ago: another request may still read them
    _age(paths[1], 9 * 60)
    paths.append(local_lora_path(jobs[2]))  # 1.2 MB, over the limit: yet none may go
    assert all(p.exists() for p in paths)
    _age(paths[0], 11 * 60)  # 11 minutes ago: now the least recently used may go
    paths.append(local_lora_path(jobs[3]))
    assert [p.exists() for p in paths] == [False, True, True, True]


def test_a_starting_gpu_worker_removes_what_no_training_needs(alice, work: Path, remote_storage: None, settings) -> None:
    kept, deleted = _job_with_lora(alice, "kept", 1000), _job_with_lora(alice, "deleted", 1000)
    kept_path, deleted_path = local_lora_path(kept), local_lora_path(deleted)
    deleted.delete()
    stale_partial = work / "x.safetensors.123.part"
    stale_partial.write_bytes(b"half")
    _age(stale_partial, 7200)
    young_partial = work / "y.safetensors.456.part"  # another worker's copy in progress
    young_partial.write_bytes(b"half")
    broken = work / (kept_path.stem + "-gone.safetensors")
    broken.symlink_to(work / "nowhere")

    from flux_studio.management.commands.run_worker import import_task_modules

    import_task_modules()  # as `run_worker` does before its start hooks
    worker.run_start_hooks()
    assert kept_path.is_file()
    assert not deleted_path.exists()  # a deleted training's weights do not outlive it on the GPU machine
    assert not stale_partial.exists() and young_partial.exists()
    assert not broken.is_symlink()


def test_the_sweep_leaves_an_empty_or_missing_cache_alone(work: Path) -> None:
    assert lora_cache.sweep() == []
    work.mkdir(parents=True)
    assert lora_cache.sweep() == []


def test_a_running_gpu_worker_removes_a_deleted_trainings_copy_within_ten_minutes(alice, remote_storage: None) -> None:
    from flux_studio.management.commands.run_worker import import_task_modules

    import_task_modules()
    kept, deleted = _job_with_lora(alice, "kept", 1000), _job_with_lora(alice, "deleted", 1000)
    clock = worker.HousekeepingClock(now=0.0)  # the worker started (and swept) at 0
    kept_path, deleted_path = local_lora_path(kept), local_lora_path(deleted)
    deleted.delete()
    clock.run_due(599.0)
    assert deleted_path.exists()  # not yet due
    clock.run_due(600.0)
    assert not deleted_path.exists() and kept_path.is_file()
