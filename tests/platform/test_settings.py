"""Settings come from the environment, fail clearly, and pass Django's deployment checks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from flux_studio.env import env_bool, env_int, env_list, env_url
from tests.conftest import ROOT


def test_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("MAX_PHOTO_MB", "lots")
    with pytest.raises(ImproperlyConfigured, match="MAX_PHOTO_MB='lots' is not a whole number"):
        env_int("MAX_PHOTO_MB", 30)
    monkeypatch.setenv("SECURE", "maybe")
    with pytest.raises(ImproperlyConfigured, match="SECURE='maybe' is not a boolean"):
        env_bool("SECURE")
    monkeypatch.setenv("REDIS_URL", "localhost:6379")
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        env_url("REDIS_URL", schemes=("redis",))


def test_defaults_and_lists(monkeypatch):
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    assert env_list("ALLOWED_HOSTS", ["127.0.0.1"]) == ["127.0.0.1"]
    monkeypatch.setenv("ALLOWED_HOSTS", "studio.example.com, 10.0.0.5")
    assert env_list("ALLOWED_HOSTS", []) == ["studio.example.com", "10.0.0.5"]
    monkeypatch.setenv("MAX_PHOTO_MB", "0")
    with pytest.raises(ImproperlyConfigured, match="below the minimum"):
        env_int("MAX_PHOTO_MB", 30, minimum=1)


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "S3_BUCKET", "DJANGO_ALLOW_ASYNC_UNSAFE", "DEFAULT_BASE_MODEL")}
    full_env.update(env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)


def test_invalid_setting_stops_start_up_with_a_message(tmp_path):
    result = _manage("check", DATA_DIR=str(tmp_path), DEFAULT_BASE_MODEL="flux-pro")
    assert result.returncode != 0
    assert "DEFAULT_BASE_MODEL='flux-pro' is not listed in BASE_MODELS" in result.stderr


def test_production_settings_pass_check_deploy(tmp_path):
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DATA_DIR=str(tmp_path), DEBUG="0", SECURE="1", ALLOWED_HOSTS="studio.example.com",
        SECRET_KEY="x7!" + "k" * 60 + "Qz9_p2#LmN",
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_dotenv_file_is_honoured(tmp_path):
    env_file = ROOT / ".env"
    if env_file.exists():
        pytest.skip("a developer .env exists; not overwriting it")
    env_file.write_text("DEFAULT_BASE_MODEL=flux-pro\n")
    try:
        result = _manage("check", DATA_DIR=str(tmp_path))
    finally:
        env_file.unlink()
    assert "DEFAULT_BASE_MODEL='flux-pro'" in result.stderr
