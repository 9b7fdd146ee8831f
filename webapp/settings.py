"""Django settings, all from the environment with safe defaults for local use.

`make run` and the test suite set DATABASE_URL / REDIS_URL to their embedded services; a
deployment (docker-compose.yml) sets them to real ones. DEBUG is off unless DEBUG=1 (development
only), so SECRET_KEY must be set (`make run` generates one into .data/, read from there when unset);
T2I_HTTPS=1 (compose) turns on the settings for serving behind a TLS proxy. Commands run by hand next to
`make run` find its ports in .data/run/connection.json and its secrets in .data/ (STACK_CONNECTION).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from webapp.stack.connection_file import read_connection

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("T2I_DATA_DIR", BASE_DIR / ".data"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return default if value in (None, "") else float(value)


def env_optional_float(name: str) -> float | None:
    value = os.environ.get(name)
    return None if value in (None, "") else float(value)


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """A setting with a fixed set of values: a typo stops the process at start with a clear message,
    instead of surfacing as odd behaviour later."""
    value = os.environ.get(name, default).strip()
    if value not in choices:
        shown = ", ".join(repr(c) if c else "'' (empty)" for c in choices)
        raise ImproperlyConfigured(f"{name} must be one of {shown}, not {value!r}")
    return value


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def data_file_secret(name: str) -> str:
    """A secret that `make run` keeps in the data directory (0600), so a `manage.py` command run by hand next
    to it needs no DATABASE_URL / REDIS_URL / SECRET_KEY; '' if none."""
    try:
        return (DATA_DIR / name).read_text().strip()
    except OSError:
        return ""


def local_secret(name: str) -> str:
    """The same, URL-quoted (the embedded services' passwords go into URLs)."""
    return quote(data_file_secret(name), safe="")


# The ports and URLs the last `make run` on this data directory chose (webapp/stack/connection_file.py), so
# commands run by hand find a stack started on other ports. The environment always wins.
STACK_CONNECTION = read_connection(DATA_DIR)


def stack_port(env_name: str, key: str, default: int) -> int:
    """A port: the environment's, else the running stack's, else the default."""
    return env_int(env_name, int(STACK_CONNECTION.get(key) or default))


# --- Security (README "Security and privacy") ------------------------------------------
# DEBUG is opt-in, for development only: its error pages show code, settings and request data.
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY") or data_file_secret("secret-key.txt")  # make run's, if it made one
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (DEBUG=1 for development).")
    SECRET_KEY = "insecure-local-development-key-do-not-use-in-production"
elif not DEBUG and SECRET_KEY.startswith("change-me"):
    raise ImproperlyConfigured("SECRET_KEY is still the placeholder from .env.example; generate a real one.")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
T2I_WEB_PORT = stack_port("T2I_WEB_PORT", "web_port", 8000)
# Where the web server answers: loadgen's default --url.
T2I_WEB_URL = os.environ.get("T2I_WEB_URL") or STACK_CONNECTION.get("web_url") or f"http://127.0.0.1:{T2I_WEB_PORT}"
CSRF_TRUSTED_ORIGINS = env_list(
    "CSRF_TRUSTED_ORIGINS", f"http://127.0.0.1:{T2I_WEB_PORT},http://localhost:{T2I_WEB_PORT}"
)
# Served over HTTPS by a TLS-terminating proxy (compose sets T2I_HTTPS=1): trust the proxy's
# X-Forwarded-Proto (it must set it, overwriting any the client sent), redirect plain HTTP, send cookies
# over HTTPS only, and HSTS. Off for `make run`, which serves plain HTTP on 127.0.0.1.
T2I_HTTPS = env_bool("T2I_HTTPS", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if T2I_HTTPS else None
SECURE_SSL_REDIRECT = T2I_HTTPS
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # probes from the load balancer come over plain HTTP
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = T2I_HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600) if T2I_HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
# Headers on every response (SecurityMiddleware, XFrameOptionsMiddleware): Django's defaults, stated.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy of HTML pages (webapp.middleware.ContentSecurityPolicyMiddleware): scripts and
# styles only from our static files; no inline script, no eval, no other origin.
T2I_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# Third-party pages (Django admin, DRF's browsable API, Swagger UI) carry a few inline styles: under these
# prefixes inline *styles* are allowed too (scripts never are).
T2I_CSP_INLINE_STYLE_PREFIXES = ("/admin/", "/api/")
# Request bodies over this many bytes get 413 before any view reads them (Django's default, stated);
# webapp.middleware.RequestSizeLimitMiddleware. Every error under /api/ is JSON (ApiJsonErrorsMiddleware).
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "knox",  # API tokens, stored hashed (replaces rest_framework.authtoken)
    "axes",  # failed-login lockout per user and per IP
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    # Domain: the ledger (rows are the truth), the approximate cache, serving control (no models).
    "webapp.ledger",
    "webapp.cache",
    "webapp.serving",
    # Faces with management commands (api and dashboard need no app entry).
    "webapp.web",
    "webapp.loadgen",
    # The GPU process: its commands and the migration history of the tables it first created.
    "workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "webapp.middleware.ContentSecurityPolicyMiddleware",  # CSP on HTML pages
    "webapp.middleware.ApiJsonErrorsMiddleware",  # any non-JSON error answer under /api/ becomes JSON
    "webapp.middleware.RequestSizeLimitMiddleware",  # 413 for a body over DATA_UPLOAD_MAX_MEMORY_SIZE
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "webapp.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into the lockout page (429)
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get(
            "DATABASE_URL",
            f"postgres://postgres:{local_secret('pg-password.txt')}@127.0.0.1:"
            f"{stack_port('T2I_PG_PORT', 'pg_port', 54329)}/t2i",
        ),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT", 5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
if env_bool("T2I_FAST_PASSWORD_HASHER", False):  # tests only: full-strength hashing costs ~0.3 s per user
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]  # the pages' scripts and styles (no inline ones: CSP)
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", DATA_DIR / "static"))
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))
MEDIA_URL = "media/"  # never served directly: images go through owner-checked views
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Celery (one app: webapp.celery) -------------------------------------------------
REDIS_URL = os.environ.get(
    "REDIS_URL",
    f"redis://:{local_secret('redis-password.txt')}@127.0.0.1:{stack_port('T2I_REDIS_PORT', 'redis_port', 63799)}/0",
)
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None  # the Postgres ledger is the source of truth, not Celery results
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "control"  # webapp.ledger.queues.CONTROL_QUEUE (settings import no app code)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Redelivery of unacked messages after a worker dies; the reconciler is faster.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
CELERY_WORKER_SEND_TASK_EVENTS = True  # Flower
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

# --- REST framework ------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # `Authorization: Token <secret>` (knox's, its lookups kept a few seconds); never calls authenticate(), so axes
        "webapp.api.auth.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",  # does not see (or lock out) API token use
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "webapp.api.openapi.ErrorDocumentingAutoSchema",  # every error code, documented
    "DEFAULT_THROTTLE_RATES": {
        "submit": os.environ.get("T2I_SUBMIT_RATE", "600/min"),
        "read": os.environ.get("T2I_READ_RATE", "6000/min"),
    },
    "EXCEPTION_HANDLER": "webapp.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Prompt-aware text-to-image serving API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI assets served locally (no CDN).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}


def _redis_db(url: str, db: int) -> str:
    """`url` pointing at Redis database `db` (the cache's own, so clearing it never touches Celery's queues)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


# Shared by every web process, so throttle rates hold across processes (a per-process cache multiplied them).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _redis_db(REDIS_URL, env_int("T2I_CACHE_REDIS_DB", 1)),
        "KEY_PREFIX": "t2i",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
    }
}

# --- Accounts: API tokens and login protection -----------------------------------------
# API tokens are django-rest-knox tokens: only a SHA-512 digest is stored, the secret is shown once at
# creation. `Authorization: Token <secret>` as before; owners list, create and revoke them at
# /api/v1/tokens/ and /tokens/.
T2I_TOKEN_DEFAULT_DAYS = env_int("T2I_TOKEN_DEFAULT_DAYS", 30)  # expiry of a new token that names none
T2I_TOKEN_MAX_DAYS = env_int("T2I_TOKEN_MAX_DAYS", 365)  # longest expiry an owner may choose
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=T2I_TOKEN_DEFAULT_DAYS),
    "AUTH_HEADER_PREFIX": "Token",
    "TOKEN_PREFIX": "t2i_",  # recognisable in logs and by secret scanners
    "AUTO_REFRESH": False,
}
# How long a web process remembers a token it looked up (webapp/api/auth.py); a token revoked through another
# web process stops working within this. 0: ask the database on every request.
T2I_TOKEN_CACHE_SECONDS = float(os.environ.get("T2I_TOKEN_CACHE_SECONDS", 2))
# django-axes: AxesStandaloneBackend must come first (it refuses a locked-out login before the password is
# checked). It only takes part in django.contrib.auth.authenticate() (login page, admin login); API tokens
# and sessions authenticate without it.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("T2I_LOGIN_FAILURE_LIMIT", 20)  # failed logins that lock...
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # ...a username (from any address) or an address
_cooloff = env_int("T2I_LOGIN_COOLOFF_MINUTES", 15)  # 0: locked until an admin unlocks (Admin › Axes)
AXES_COOLOFF_TIME = timedelta(minutes=_cooloff) if _cooloff else None
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # the lock lasts the cool-off from the 20th failure
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False  # no start-up banner in every process's log

# --- Serving -------------------------------------------------------------------------
# Defaults for the admin-editable ServingConfig row (created on first use).
T2I_WORKERS = env_int("T2I_WORKERS", 2)  # GPU slots; worker i consumes queue gpu.<i>
T2I_ENGINE = env_choice("T2I_ENGINE", "diffusers", ("diffusers", "emulated"))
# The model the workers load: T2I_MODEL_PATH, else the trained demo model kept in the repository (18 MB;
# `manage.py build_demo_model --out workers/demo/pretrained` reproduces it), else the tiny random model that
# `make run` builds (tests point T2I_MODEL_PATH at that one).
DEMO_MODEL_PATH = BASE_DIR / "workers" / "demo" / "pretrained"
_DEMO_MODEL_PRESENT = (DEMO_MODEL_PATH / "model_index.json").is_file()
T2I_MODEL_PATH = Path(
    os.environ.get("T2I_MODEL_PATH") or (DEMO_MODEL_PATH if _DEMO_MODEL_PRESENT else DATA_DIR / "models" / "tiny-sd")
)
T2I_DEMO_MARKER = T2I_MODEL_PATH / "demo_model.json"  # written by build_demo_model (workers/demo/marker.py)
T2I_DEVICE = os.environ.get("T2I_DEVICE", "")  # "" = cuda if available else cpu
if not re.fullmatch(r"|cpu|mps|cuda(:\d+)?", T2I_DEVICE):
    raise ImproperlyConfigured(f"T2I_DEVICE must be empty, cpu, mps, cuda or cuda:<index>, not {T2I_DEVICE!r}")
# "" keeps the model folder's scheduler; "ddim" or "euler" swaps it (needed for real SD 1.x folders,
# which ship PNDM: only DDIM and Euler can resume from a cached latent exactly).
T2I_SCHEDULER = env_choice("T2I_SCHEDULER", "", ("", "ddim", "euler"))
T2I_SLO_SECONDS = env_float("T2I_SLO_SECONDS", 30.0)
T2I_BATCH_SLO_SECONDS = env_float("T2I_BATCH_SLO_SECONDS", 10 * T2I_SLO_SECONDS)  # SLO of the `batch` class
T2I_DEFAULT_STEPS = env_int("T2I_DEFAULT_STEPS", 50)
# The demo model draws 32 × 32 images; the others are built for 64 × 64 and up.
T2I_DEFAULT_SIZE = env_int("T2I_DEFAULT_SIZE", 32 if T2I_DEMO_MARKER.is_file() else 64)
T2I_ALLOWED_SIZES = os.environ.get("T2I_ALLOWED_SIZES", "32,64,128,256,512,768,1024")
T2I_MAX_IN_FLIGHT = env_int("T2I_MAX_IN_FLIGHT", 20)
T2I_MAX_ATTEMPTS = env_int("T2I_MAX_ATTEMPTS", 3)
# Recovery timings (lease, heartbeat, reconcile period, republish delay) are derived from the SLO
# (scheduler/recovery.py, webapp/serving/live_config.recovery_for). These only override them, e.g. for tests.
T2I_LEASE_SECONDS = env_optional_float("T2I_LEASE_SECONDS")
T2I_REPUBLISH_AFTER_SECONDS = env_optional_float("T2I_REPUBLISH_AFTER_SECONDS")
T2I_RECONCILE_SECONDS = env_optional_float("T2I_RECONCILE_SECONDS")
# A batch's soft time limit is at least this (workers/time_limits.py): engines slower than their profile.
T2I_TASK_TIME_LIMIT_FLOOR_S = env_float("T2I_TASK_TIME_LIMIT_FLOOR_S", 120.0)
T2I_MAX_PROMPT_TOKENS = 77  # CLIP text encoder context, including start/end tokens
# Latency profile L(K', b) the scheduler plans with: a preset (sdxl-a100, sd15-a100) or a CSV.
# Empty: the engine's measured profile (manage.py profile_engine) if present, else the fallback.
T2I_PROFILE = os.environ.get("T2I_PROFILE", "")
T2I_MEASURED_PROFILE = Path(os.environ.get("T2I_MEASURED_PROFILE", DATA_DIR / "profiles" / "engine.csv"))
T2I_FALLBACK_PROFILE = os.environ.get("T2I_FALLBACK_PROFILE", "sd15-a100")
# Emulated engine: sleep L(K', b) x this factor instead of running diffusion.
T2I_TIME_FACTOR = env_float("T2I_TIME_FACTOR", 1.0)
# 1: add the per-batch overhead the workers measured (claim, image saving, ledger writes) to the profile the live
# scheduler plans, routes and sheds with (webapp/serving/batch_overhead.py). Off by default: on 16 emulated
# workers it moved no violation beyond run-to-run noise and doubled the redirect rate (docs/loadgen.md).
T2I_MEASURED_OVERHEAD = env_bool("T2I_MEASURED_OVERHEAD", False)
# /metrics: staff, or `Authorization: Bearer <T2I_METRICS_TOKEN>` when a token is set; no one else, not
# even 127.0.0.1 (a reverse proxy on the same host makes every client look local).
T2I_METRICS_TOKEN = os.environ.get("T2I_METRICS_TOKEN", "")
T2I_METRICS_WINDOWS = ("5m", "15m", "1h", "6h", "24h")  # the dashboard's windows (minutes or hours)
T2I_METRICS_WINDOW = env_choice("T2I_METRICS_WINDOW", "5m", T2I_METRICS_WINDOWS)
# A controller solve slower than this fraction of its period is discarded (previous plan kept).
T2I_SLOW_SOLVE_FRACTION = env_float("T2I_SLOW_SOLVE_FRACTION", 0.5)
# Probing limit (webapp.serving.probing): a user's new prompt is refused (429) when T2I_PROBE_LIMIT of their
# requests in the last T2I_PROBE_WINDOW_SECONDS are near-duplicates of it: normalised edit distance at most
# T2I_PROBE_EDIT_DISTANCE (fraction of the longer prompt) or MiniLM cosine at least T2I_PROBE_SIMILARITY.
# Identical prompts (other seeds) do not count; staff are exempt; T2I_PROBE_LIMIT=0 turns it off.
T2I_PROBE_LIMIT = env_int("T2I_PROBE_LIMIT", 8)
T2I_PROBE_WINDOW_SECONDS = env_float("T2I_PROBE_WINDOW_SECONDS", 60.0)
T2I_PROBE_EDIT_DISTANCE = env_float("T2I_PROBE_EDIT_DISTANCE", 0.15)
T2I_PROBE_SIMILARITY = env_float("T2I_PROBE_SIMILARITY", 0.95)
T2I_PROBE_HISTORY = env_int("T2I_PROBE_HISTORY", 50)  # most recent requests in the window compared

# --- Approximate cache (webapp.cache.store; DESIGN §2, §6) ---------------------------
# Default for the admin-editable CacheConfig row (created on first use); the similarity -> K*
# thresholds are ServingConfig.thresholds. Latent blobs live in the latents storage (the storage section
# below): files under T2I_CACHE_DIR, or keys in the S3 bucket every worker reaches; never in Postgres rows.
T2I_CACHE_LEVELS = tuple(sorted({int(k) for k in env_list("T2I_CACHE_LEVELS", "5,10,15,20,25")}))
T2I_CACHE_BYTE_BUDGET = env_int("T2I_CACHE_BYTE_BUDGET", 2 * 1024**3)  # bytes of latent files
T2I_CACHE_DIR = Path(os.environ.get("T2I_CACHE_DIR", MEDIA_ROOT / "latent-cache"))
T2I_CACHE_EF_SEARCH = env_int("T2I_CACHE_EF_SEARCH", 40)  # pgvector hnsw.ef_search for lookups
# Who may reuse whose cache entries: "shared" (everyone), "tenant" (the same Django group, or the user
# alone) or "off" (no lookup, no insert). Initial value of ServingConfig.cache_scope (admin afterwards).
T2I_CACHE_SCOPE = env_choice("T2I_CACHE_SCOPE", "shared", ("shared", "tenant", "off"))
# Prompt embedder the cache compares: "minilm" (packaged MiniLM, default) or "clip" (the model's own
# CLIP text encoder, workers/clip_embeddings.py). MiniLM embeddings are stored either way.
T2I_EMBEDDER = env_choice("T2I_EMBEDDER", "minilm", ("minilm", "clip"))

# --- Storage of images and latents (docs/storage.md; webapp/cache/latent_storage.py) ----------------------
# Rows name files by storage key, never by host path. "local" (default): images and thumbnails under
# MEDIA_ROOT, latents under T2I_CACHE_DIR; also right for a shared mount (NFS/EFS) at the same path on every
# host. "s3": one S3-compatible bucket (AWS S3, MinIO) through django-storages, so GPU workers on other hosts
# share the latent cache and the web tier serves their images: s3://T2I_S3_BUCKET/T2I_S3_PREFIX/ holds
# images/, thumbs/ and latent-cache/, the same layout as MEDIA_ROOT (`aws s3 sync` moves a local store).
# Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the host's IAM role), read by boto3.
T2I_STORAGE = env_choice("T2I_STORAGE", "local", ("local", "s3"))
T2I_LATENT_LRU_BYTES = env_int("T2I_LATENT_LRU_BYTES", 32 * 1024**2)  # per worker process; 0 turns it off
_FILESYSTEM_STORAGE = "django.core.files.storage.FileSystemStorage"
_S3_STORAGE = "storages.backends.s3.S3Storage"
_STATIC_STORAGE = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}


def s3_storages(bucket: str, prefix: str = "", endpoint_url: str | None = None, region: str | None = None) -> dict:
    """STORAGES for one S3-compatible bucket: images under <prefix>/, latents under <prefix>/latent-cache/."""
    from botocore.config import Config

    options = {
        "bucket_name": bucket,
        "endpoint_url": endpoint_url,
        "region_name": region,
        "file_overwrite": True,  # keys are unique (uuids): no existence check before each write
        "default_acl": None,  # private objects: images reach users only through the owner-checked view
        # A storage outage must not hang a worker for minutes: short connects, few retries. Path-style
        # addressing for a custom endpoint (MinIO, loopback), which has no per-bucket DNS names.
        "client_config": Config(
            connect_timeout=env_float("T2I_S3_CONNECT_TIMEOUT", 3.0),
            read_timeout=env_float("T2I_S3_READ_TIMEOUT", 20.0),
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        ),
    }
    prefix = prefix.strip().strip("/")
    return {
        "default": {"BACKEND": _S3_STORAGE, "OPTIONS": {**options, "location": prefix}},
        "latents": {
            "BACKEND": _S3_STORAGE,
            "OPTIONS": {**options, "location": "/".join(filter(None, (prefix, "latent-cache")))},
        },
        "staticfiles": _STATIC_STORAGE,
    }


if T2I_STORAGE == "s3":
    T2I_S3_BUCKET = os.environ.get("T2I_S3_BUCKET", "").strip()
    if not T2I_S3_BUCKET:
        raise ImproperlyConfigured("T2I_STORAGE=s3 needs T2I_S3_BUCKET (the bucket for images and latents)")
    STORAGES = s3_storages(
        T2I_S3_BUCKET,
        os.environ.get("T2I_S3_PREFIX", ""),
        os.environ.get("T2I_S3_ENDPOINT_URL", "").strip() or None,  # MinIO etc.; unset: AWS itself
        os.environ.get("T2I_S3_REGION", "").strip() or None,
    )
else:
    STORAGES = {
        "default": {"BACKEND": _FILESYSTEM_STORAGE},  # MEDIA_ROOT
        "latents": {
            "BACKEND": _FILESYSTEM_STORAGE,
            "OPTIONS": {"location": str(T2I_CACHE_DIR), "allow_overwrite": True},
        },
        "staticfiles": _STATIC_STORAGE,
    }

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
