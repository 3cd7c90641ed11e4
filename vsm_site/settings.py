"""VSM's one settings module, configured from environment variables.

See README.md ("Configuration") for every variable. Bad values stop start-up with
``ImproperlyConfigured`` (helpers in ``vsm_site.env``).
"""
from __future__ import annotations

from pathlib import Path

from django.utils.translation import gettext_lazy as _

from vsm_site import env

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env.env_bool("DEBUG", False)
SECRET_KEY = env.secret_key(env.env_str("SECRET_KEY"), DEBUG)
ALLOWED_HOSTS = env.env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.env_list("CSRF_TRUSTED_ORIGINS", [])

# Where uploaded documents, model weights, indexes and exports live: one folder per domain.
VSM_DATA_DIR = env.data_dir(env.env_str("VSM_DATA_DIR"), BASE_DIR)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "domains",
    "datasets_app",
    "training_app",
    "inference_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "vsm_site.urls"
WSGI_APPLICATION = "vsm_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.database(env.env_str("DATABASE_URL"), VSM_DATA_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = env.env_str("VSM_LANGUAGE", "en")
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env.env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VSM_DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]

# Upload limits (documents are checked again by the loaders; these bound the request).
VSM_API_RATE = env.env_str("VSM_API_RATE", "600/minute")  # per API key or user, all API endpoints
VSM_LOGIN_FAILURES = env.env_int("VSM_LOGIN_FAILURES", 10, minimum=1)  # per address and per username, 15 min
VSM_MAX_UPLOAD_MB = env.env_int("VSM_MAX_UPLOAD_MB", 100, minimum=1)
VSM_MAX_PDF_PAGES = env.env_int("VSM_MAX_PDF_PAGES", 2000, minimum=1)
VSM_OCR_BACKEND = env.env_choice("VSM_OCR_BACKEND", "rapidocr", ("rapidocr", "paddle"))  # or "paddle" when PaddleOCR is installed
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "domains.uploads.SizeLimitUploadHandler",  # first: stops reading a file over the limit
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
DATA_UPLOAD_MAX_NUMBER_FILES = env.env_int("VSM_MAX_UPLOAD_FILES", 100, minimum=1)

# Background jobs. The Job row is the truth; the broker is transport only (see domains/jobs.py).
VSM_JOB_TIMEOUT = env.env_int("VSM_JOB_TIMEOUT", 48 * 3600, minimum=10)  # hard cap for one job run
VSM_JOB_RETRY = env.env_int("VSM_JOB_RETRY", VSM_JOB_TIMEOUT + 3600, minimum=11)
VSM_JOB_LEASE = env.env_int("VSM_JOB_LEASE", 120, minimum=2)  # a job whose heartbeat is older is stale
VSM_JOB_MAX_ATTEMPTS = env.env_int("VSM_JOB_MAX_ATTEMPTS", 3, minimum=1)
env.job_timing(VSM_JOB_TIMEOUT, VSM_JOB_RETRY, VSM_JOB_LEASE)

Q_CLUSTER = {
    "name": env.env_str("VSM_QUEUE_NAME", "vsm"),
    "workers": env.env_int("VSM_WORKERS", 2, minimum=1),
    "recycle": 50,
    "timeout": VSM_JOB_TIMEOUT,
    "retry": VSM_JOB_RETRY,
    # django-q2 must not retry on its own: the job reaper counts attempts (domains.jobs).
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    # Jobs parse hostile files in a child process; daemonic workers may not have children.
    "daemonize_workers": False,
    "save_limit": 500,
    "label": "Queue",
    **env.broker(env.env_str("VSM_BROKER")),
}
# GPU workers: jobs of these kinds go to the queue VSM_GPU_QUEUE, which only workers started with
# Q_CLUSTER_NAME=<that name> take (one job at a time each, by default); everything else stays on the
# main queue. Unset: every job goes to the main queue.
VSM_GPU_QUEUE = env.env_str("VSM_GPU_QUEUE", "") or ""
VSM_GPU_JOB_KINDS = env.env_list("VSM_GPU_JOB_KINDS", ["train", "evaluate", "export"])
Q_CLUSTER["ALT_CLUSTERS"] = (
    {VSM_GPU_QUEUE: {"workers": env.env_int("VSM_GPU_WORKERS", 1, minimum=1)}} if VSM_GPU_QUEUE else {}
)

# Experiment logs: every training run writes TensorBoard event files under its run folder; with
# VSM_WANDB_PROJECT set it also logs to Weights & Biases (WANDB_API_KEY as wandb reads it;
# VSM_WANDB_MODE=offline keeps the W&B files in the run folder).
VSM_WANDB = {"project": env.env_str("VSM_WANDB_PROJECT", "") or "", "entity": env.env_str("VSM_WANDB_ENTITY", "") or "",
             "mode": env.env_choice("VSM_WANDB_MODE", "online", ("online", "offline"))}

# Monitoring (inference_app/monitoring.py): /metrics is open to loopback and private addresses and
# staff unless VSM_METRICS_TOKEN is set (then a bearer token); alerts go to the vsm.alerts log and,
# when set, as JSON to VSM_ALERT_WEBHOOK.
VSM_METRICS_TOKEN = env.env_str("VSM_METRICS_TOKEN", "") or ""
# Pushing exports to a model hub: the Hugging Face and ModelScope endpoints (a mirror or a self-hosted
# hub works too); empty means each library's default (huggingface.co, www.modelscope.cn).
VSM_HF_ENDPOINT = env.env_str("VSM_HF_ENDPOINT", "") or env.env_str("HF_ENDPOINT", "") or ""
VSM_MODELSCOPE_ENDPOINT = env.env_str("VSM_MODELSCOPE_ENDPOINT", "") or ""
VSM_ALERT_WEBHOOK = env.env_str("VSM_ALERT_WEBHOOK", "") or ""

CACHES = {"default": env.cache(env.env_str("VSM_CACHE"), env.env_str("VSM_BROKER"), VSM_DATA_DIR)}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "domains.api_auth.ApiKeyAuthentication",
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["domains.api_auth.IsUserOrApiKey"],
    "DEFAULT_THROTTLE_CLASSES": ["domains.api_auth.ApiRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "VSM API",
    "DESCRIPTION": "Vertical small models: domains, documents, datasets, training, evaluation and serving.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Stable enum names, so a later app's own "status" field cannot rename these in clients.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "domains.models.Job.Status",
        "RoleEnum": "domains.models.Role",
        "ApiKeyScopeEnum": "domains.models.ApiKey.Scope",
        "LanguageEnum": "domains.models.Domain.Language",
        "DocumentStatusEnum": "domains.models.Document.Status",
        "QAPairStatusEnum": "datasets_app.models.QAPair.Status",
        "TrainingKindEnum": "training_app.models.TrainingRun.Kind",
    },
}

# Behind TLS (directly or through a proxy that sets X-Forwarded-Proto), turn on VSM_HTTPS.
VSM_HTTPS = env.env_bool("VSM_HTTPS", False)
if VSM_HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.env_int("VSM_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.env_bool("VSM_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env.env_bool("VSM_HSTS_PRELOAD", True)
SESSION_COOKIE_SECURE = env.env_bool("VSM_SECURE_COOKIES", VSM_HTTPS or not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.env_str("VSM_LOG_LEVEL", "INFO")},
}
