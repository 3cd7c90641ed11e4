"""Small helpers that read settings from environment variables and refuse bad values.

Each helper raises ``ImproperlyConfigured`` with the variable's name and what was wrong,
so a misconfigured deployment stops at start-up with a message a person can act on.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    return default if value is None else value.strip()


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    value = env_str(name, None, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {value!r}")


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    value = env_str(name, None, environ)
    if value is None or value == "":
        result = default
    else:
        try:
            result = int(value.replace("_", ""))
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and result < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {result}")
    if maximum is not None and result > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {result}")
    return result


def env_choice(name: str, default: str, choices: tuple[str, ...], environ: Mapping[str, str] | None = None) -> str:
    value = env_str(name, default, environ) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def env_list(name: str, default: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    value = env_str(name, None, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def data_dir(value: str | None, base_dir: Path) -> Path:
    """Resolve VSM_DATA_DIR (relative paths are taken from the project root) and create it."""
    path = Path(value or "var")
    if not path.is_absolute():
        path = base_dir / path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(f"VSM_DATA_DIR {str(path)!r} cannot be created: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ImproperlyConfigured(f"VSM_DATA_DIR {str(path)!r} is not writable")
    return path


def database(url: str | None, data_dir: Path) -> dict:
    """Turn DATABASE_URL into Django's DATABASES['default'].

    The embedded default is SQLite under the data dir, tuned for a web process and
    workers sharing one file (WAL journal, IMMEDIATE transactions, a busy timeout).
    """
    import dj_database_url

    if not url:
        url = f"sqlite:///{data_dir / 'vsm.sqlite3'}"
    scheme = urlparse(url).scheme
    if scheme not in {"sqlite", "postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL must be a sqlite:/// or postgres:// URL, got scheme {scheme!r}"
        )
    try:
        config = dj_database_url.parse(url, conn_max_age=0)
    except Exception as exc:  # dj_database_url raises several types on malformed URLs
        raise ImproperlyConfigured(f"DATABASE_URL could not be parsed: {exc}") from None
    if config["ENGINE"] == "django.db.backends.sqlite3":
        name = config.get("NAME") or ""
        if not name or name == ":memory:":
            raise ImproperlyConfigured("DATABASE_URL for SQLite must name a file, e.g. sqlite:////srv/vsm/vsm.sqlite3")
        config["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
        # Tests run against a file too, so that worker subprocesses see the same rows.
        config["TEST"] = {"NAME": str(Path(name).with_name("test_" + Path(name).name))}
    else:
        if not config.get("NAME"):
            raise ImproperlyConfigured("DATABASE_URL for PostgreSQL must name a database")
    return config


def broker(value: str | None) -> dict:
    """VSM_BROKER: 'orm' (default, the database itself) or a redis:// URL."""
    if not value or value == "orm":
        return {"orm": "default"}
    scheme = urlparse(value).scheme
    if scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"VSM_BROKER must be 'orm' or a redis:// URL, got {value!r}")
    return {"redis": value}


def _next_db(url: str) -> str:
    """The broker's Redis with the next database number: a cache flush must never empty the job queue."""
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss"}:
        return url
    db = parsed.path.strip("/") or "0"
    return parsed._replace(path=f"/{(int(db) + 1) % 16 if db.isdigit() else db}").geturl()


def cache(value: str | None, broker_url: str | None, data_dir) -> dict:
    """VSM_CACHE: a redis:// URL, 'file' or 'locmem'. By default the Redis broker's server when
    there is one, else files under VSM_DATA_DIR: the API's per-key rate limits must be counted
    across all web worker processes, which a per-process memory cache would not do."""
    value = value or (_next_db(broker_url) if broker_url and broker_url != "orm" else "file")
    if value == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    if value == "file":
        return {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": str(Path(data_dir) / "cache" / "django")}
    if urlparse(value).scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"VSM_CACHE must be a redis:// URL, 'file' or 'locmem', got {value!r}")
    return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": value, "KEY_PREFIX": "vsm-cache"}


def secret_key(value: str | None, debug: bool) -> str:
    if value:
        if len(value) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long")
        return value
    if debug:
        return "vsm-development-only-secret-key-do-not-use-in-production"
    raise ImproperlyConfigured(
        "SECRET_KEY is not set. Set it to a long random string (for example the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`), or set DEBUG=1 for development."
    )


def job_timing(timeout: int, retry: int, lease: int) -> None:
    """Refuse a queue configuration under which a long job could be started twice."""
    if retry <= timeout:
        raise ImproperlyConfigured(
            f"VSM_JOB_RETRY ({retry}s) must be larger than VSM_JOB_TIMEOUT ({timeout}s), "
            "or the broker re-delivers a job that is still running"
        )
    if lease * 2 > timeout:
        raise ImproperlyConfigured(
            f"VSM_JOB_LEASE ({lease}s) must be at most half of VSM_JOB_TIMEOUT ({timeout}s)"
        )
