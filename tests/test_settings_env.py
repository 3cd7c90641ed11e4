"""Settings read from the environment refuse bad values with a message naming the variable."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from vsm_site import env

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("raw,expected", [("1", True), ("yes", True), ("On", True), ("0", False), ("false", False)])
def test_env_bool_reads_common_spellings(raw, expected):
    assert env.env_bool("DEBUG", not expected, {"DEBUG": raw}) is expected


def test_env_bool_rejects_nonsense():
    with pytest.raises(ImproperlyConfigured, match="DEBUG must be a boolean"):
        env.env_bool("DEBUG", False, {"DEBUG": "maybe"})


def test_env_int_bounds_and_garbage():
    assert env.env_int("N", 5, environ={}) == 5
    assert env.env_int("N", 5, environ={"N": "1_000"}) == 1000
    with pytest.raises(ImproperlyConfigured, match="N must be an integer, got 'ten'"):
        env.env_int("N", 5, environ={"N": "ten"})
    with pytest.raises(ImproperlyConfigured, match="N must be at least 1, got 0"):
        env.env_int("N", 5, minimum=1, environ={"N": "0"})


def test_env_choice():
    assert env.env_choice("OCR", "rapidocr", ("rapidocr", "paddle"), {}) == "rapidocr"
    assert env.env_choice("OCR", "rapidocr", ("rapidocr", "paddle"), {"OCR": "paddle"}) == "paddle"
    with pytest.raises(ImproperlyConfigured, match="OCR must be one of rapidocr, paddle, got 'tesseract'"):
        env.env_choice("OCR", "rapidocr", ("rapidocr", "paddle"), {"OCR": "tesseract"})


def test_env_list_splits_and_trims():
    assert env.env_list("H", [], {"H": " a.example, b.example ,,"}) == ["a.example", "b.example"]
    assert env.env_list("H", ["x"], {}) == ["x"]


def test_database_defaults_to_sqlite_under_the_data_dir(tmp_path):
    config = env.database(None, tmp_path)
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(tmp_path / "vsm.sqlite3")
    assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]
    assert config["TEST"]["NAME"] == str(tmp_path / "test_vsm.sqlite3")


def test_database_accepts_postgres_and_rejects_others(tmp_path):
    config = env.database("postgres://vsm:pw@db.internal:5433/vsm", tmp_path)
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"], config["USER"]) == ("db.internal", 5433, "vsm", "vsm")
    with pytest.raises(ImproperlyConfigured, match="sqlite:/// or postgres://"):
        env.database("mysql://root@localhost/vsm", tmp_path)
    with pytest.raises(ImproperlyConfigured, match="must name a database"):
        env.database("postgres://vsm@db.internal:5432", tmp_path)


def test_broker_orm_by_default_and_redis_by_url():
    assert env.broker(None) == {"orm": "default"}
    assert env.broker("orm") == {"orm": "default"}
    assert env.broker("redis://127.0.0.1:6379/2") == {"redis": "redis://127.0.0.1:6379/2"}
    with pytest.raises(ImproperlyConfigured, match="VSM_BROKER must be 'orm' or a redis:// URL"):
        env.broker("amqp://guest@localhost")


def test_secret_key_required_outside_debug():
    assert env.secret_key(None, debug=True)
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY is not set"):
        env.secret_key(None, debug=False)
    with pytest.raises(ImproperlyConfigured, match="at least 32 characters"):
        env.secret_key("short", debug=False)


def test_job_retry_must_exceed_timeout():
    env.job_timing(timeout=3600, retry=3700, lease=60)
    with pytest.raises(ImproperlyConfigured, match="VSM_JOB_RETRY .* must be larger than VSM_JOB_TIMEOUT"):
        env.job_timing(timeout=3600, retry=3600, lease=60)
    with pytest.raises(ImproperlyConfigured, match="VSM_JOB_LEASE"):
        env.job_timing(timeout=100, retry=200, lease=60)


def test_data_dir_is_created_relative_to_the_project(tmp_path):
    assert env.data_dir("sub/dir", tmp_path) == tmp_path / "sub" / "dir"
    assert (tmp_path / "sub" / "dir").is_dir()


def _check(**environ) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE"}}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env={**clean, "VSM_DATA_DIR": "var/test", **environ},
        capture_output=True, text=True, timeout=120,
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = _check(DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_bad_retry_setting_stops_start_up():
    result = _check(DEBUG="1", VSM_JOB_TIMEOUT="600", VSM_JOB_RETRY="300")
    assert result.returncode != 0
    assert "must be larger than VSM_JOB_TIMEOUT" in result.stderr


def test_production_settings_pass_the_deploy_check():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "vsm_site.settings", "DEBUG": "0", "VSM_DATA_DIR": "var/test",
             "SECRET_KEY": "x7" * 30 + "-production-like-key", "ALLOWED_HOSTS": "vsm.example.org",
             "VSM_SECURE_COOKIES": "1", "VSM_HTTPS": "1"},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_cache_is_shared_between_processes_by_default(tmp_path):
    assert env.cache(None, None, tmp_path) == {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                                               "LOCATION": str(tmp_path / "cache" / "django")}
    redis = env.cache(None, "redis://127.0.0.1:6379/0", tmp_path)  # the broker's Redis, the next database
    assert redis["BACKEND"].endswith("RedisCache") and redis["LOCATION"] == "redis://127.0.0.1:6379/1"
    assert env.cache(None, "redis://:pw@cache:6380", tmp_path)["LOCATION"] == "redis://:pw@cache:6380/1"
    assert env.cache("redis://other:6379/5", "redis://x:6379/0", tmp_path)["LOCATION"] == "redis://other:6379/5"
    assert env.cache("locmem", "redis://x", tmp_path)["BACKEND"].endswith("LocMemCache")
    with pytest.raises(ImproperlyConfigured, match="VSM_CACHE"):
        env.cache("memcached://x", None, tmp_path)
