"""Django settings for FLUX Studio.

Everything that differs between machines comes from environment variables (or a `.env` file in
the project folder), read through the typed helpers in `flux_studio.env`. The defaults give the
embedded shape: SQLite, Huey on SQLite, local media files and an in-process channel layer fed
from the events table, so `make run` needs no other server. Setting DATABASE_URL, REDIS_URL and
S3_BUCKET moves the studio to PostgreSQL, Redis and an S3-compatible bucket. README.md lists
every setting.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

from flux_studio.env import env_bool, env_float, env_int, env_list, env_path, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
load_dotenv(BASE_DIR / ".env", override=False)

DATA_DIR = env_path("DATA_DIR", BASE_DIR / "var")
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in DATA_DIR."""
    configured = env_str("SECRET_KEY")
    if configured:
        return configured
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Behind HTTPS (a TLS-terminating proxy), every cookie and redirect becomes secure.
SECURE = env_bool("SECURE", False)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE
SECURE_HSTS_SECONDS = 31_536_000 if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
if SECURE:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "flux_studio",
    "flux_studio.api",
    "trainer",
    "gallery",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "flux_studio.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "flux_studio.urls"
ASGI_APPLICATION = "flux_studio.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", schemes=("postgres", "postgresql", "sqlite"))
if DATABASE_URL and not DATABASE_URL.startswith("sqlite"):
    # No persistent connections: under ASGI each request runs in a thread of its own, so a kept
    # connection would linger per request until garbage collection (Django's advice for ASGI).
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
else:
    # WAL lets the web server read while the worker writes progress; IMMEDIATE transactions and
    # a busy timeout turn writer contention into a short wait instead of "database is locked".
    _sqlite_path = dj_database_url.parse(DATABASE_URL)["NAME"] if DATABASE_URL else DATA_DIR / "studio.sqlite3"
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _sqlite_path,
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
            },
            "TEST": {"NAME": str(DATA_DIR / "test-studio.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: task queue and channel layer when scaled out ---------------------------------------
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss", "unix"))

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 sets a default socket timeout that kills idle consumers every 5 s.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": None}], "capacity": 1500},
        }
    }
else:
    # In-process layer; the worker's events reach it through the events table (flux_studio.relay).
    # Capacity per socket: a slow browser tab may fall this far behind before events are dropped
    # (it then replays them from the table when it reconnects).
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 2000}}}

# Shared cache (the API's per-token rate limit): Redis when scaled out, else per process.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "flux"}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# How often an ASGI process polls the events table for worker events (embedded shape only).
EVENTS_POLL_SECONDS = env_float("EVENTS_POLL_SECONDS", 0.15, minimum=0.02)

# Huey queues: "gpu" runs captioning, training and generation (one consumer per GPU);
# "default" runs light work (webhooks, housekeeping).
HUEY_IMMEDIATE = env_bool("HUEY_IMMEDIATE", False)
WORKER_HEARTBEAT_SECONDS = env_int("WORKER_HEARTBEAT_SECONDS", 5, minimum=1)
WORKER_STALE_SECONDS = env_int("WORKER_STALE_SECONDS", 60, minimum=5)

# --- Files ------------------------------------------------------------------------------------
MEDIA_ROOT = env_path("MEDIA_ROOT", DATA_DIR / "media")
# Private files are never served from a public URL: views check ownership and then stream the
# file (local storage) or redirect to a short-lived signed URL (S3).
MEDIA_URL = "/media-not-public/"
S3_BUCKET = env_str("S3_BUCKET")
if S3_BUCKET:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env_str("S3_ENDPOINT_URL") or None,
            "region_name": env_str("S3_REGION", "us-east-1"),
            "access_key": env_str("S3_ACCESS_KEY_ID") or None,
            "secret_key": env_str("S3_SECRET_ACCESS_KEY") or None,
            "signature_version": "s3v4",
            "querystring_auth": True,
            "querystring_expire": env_int("S3_URL_EXPIRE_SECONDS", 3600, minimum=60),
            "file_overwrite": False,
            "default_acl": None,
        },
    }
else:
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True
WHITENOISE_MAX_AGE = 3600

# Uploads: Django streams big files to disk; the studio checks each photo itself.
MAX_PHOTO_MB = env_int("MAX_PHOTO_MB", 30, minimum=1)
MAX_PHOTOS_PER_DATASET = env_int("MAX_PHOTOS_PER_DATASET", 200, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Models -----------------------------------------------------------------------------------
# Base model used when a person does not choose one. "demo" is a small FLUX-architecture model
# this project pretrained to draw simple coloured shapes: it runs anywhere (CPU, offline) and shows
# whether a fine-tune learned something. "tiny" is random (for tests); "flux-dev" /
# "flux-schnell" / a hub id / a local folder need a GPU and the weights.
DEFAULT_BASE_MODEL = env_str("DEFAULT_BASE_MODEL", "demo")
BASE_MODELS = env_list("BASE_MODELS", ["demo", "tiny", "flux-dev", "flux-schnell"])
if DEFAULT_BASE_MODEL not in BASE_MODELS:
    raise ImproperlyConfigured(f"DEFAULT_BASE_MODEL={DEFAULT_BASE_MODEL!r} is not listed in BASE_MODELS")
CAPTIONER = env_str("CAPTIONER", "florence2")
# Captioners a person may choose for a dataset besides the presets and CAPTIONER: specs the
# operator vouches for (hub ids, local folders). A person cannot name any other folder or hub id.
CAPTIONERS = env_list("CAPTIONERS", [])
CAPTION_PROMPT = env_str("CAPTION_PROMPT", "")  # blank: the captioner's built-in instruction
# Device for generation in the GPU worker: auto (CUDA when present), cpu, cuda, cuda:1, ...
GENERATION_DEVICE = env_str("GENERATION_DEVICE", "auto")
# torch.compile the transformer blocks in training jobs: steps ~15% (CPU) to ~35% (GPU) faster after a one-off compile
# per image size (about a minute on a CPU, cached on disk for the next job); for long jobs.
TRAIN_COMPILE = env_bool("TRAIN_COMPILE", False)
# With TRAIN_COMPILE on a CUDA worker: replay the compiled blocks as CUDA graphs (FLUX.1-dev on an
# H200: 512² steps 0.11 s instead of 0.20 compiled, 0.32 eager). Ignored on a CPU worker.
TRAIN_CUDA_GRAPHS = env_bool("TRAIN_CUDA_GRAPHS", False)
# On a GPU with FP8 tensor cores (L4, L40, RTX 40, H100, H200): the frozen base's matmuls in FP8 in
# fast-mode jobs (trainer/engine/fp8.py); CPU workers ignore it. A GPU without FP8 fails such jobs with a message.
TRAIN_FP8 = env_bool("TRAIN_FP8", False)
# GPU worker: local copies of LoRA files for generation (WORK_DIR/lora-cache; with remote storage
# each is a full copy) are kept under this size, least recently used dropped first.
LORA_CACHE_MB = env_int("LORA_CACHE_MB", 10240, minimum=0)
# Where engine outputs (LoRAs, checkpoints, samples) are written by the worker before upload.
WORK_DIR = env_path("WORK_DIR", DATA_DIR / "work")
# Cached tiny/demo base pipelines built offline.
MODEL_CACHE_DIR = env_path("MODEL_CACHE_DIR", DATA_DIR / "models")

# --- HTTP API ---------------------------------------------------------------------------------
PUBLIC_URL = env_str("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", 600, minimum=1)
# Live event streams (Server-Sent Events) one person may hold open at once on one server process.
API_MAX_STREAMS_PER_USER = env_int("API_MAX_STREAMS_PER_USER", 20, minimum=1)
API_WEBHOOK_RETRY_BASE_S = env_float("API_WEBHOOK_RETRY_BASE_S", 5.0, minimum=0.1)
# Webhooks to loopback/private addresses would let a user probe internal services; off by default.
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)

# --- Accounts ---------------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "huey": {"level": "INFO"},
        "daphne": {"level": "WARNING"},
    },
}
