"""Settings for the test suite: the real settings module with test-friendly environment defaults."""
import os
from pathlib import Path

os.environ.setdefault("SECRET_KEY", "vsm-test-secret-key-0123456789-abcdefghijklmnop")
os.environ.setdefault("VSM_SECURE_COOKIES", "0")
os.environ.setdefault("VSM_DATA_DIR", "var/test")
os.environ.setdefault("VSM_QUEUE_NAME", "vsm-test")  # keep test messages apart from a running instance

from vsm_site.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # One test database file per pytest process, so runs side by side do not share one.
    _test = Path(DATABASES["default"]["TEST"]["NAME"])  # noqa: F405
    DATABASES["default"]["TEST"]["NAME"] = str(_test.with_name(f"{_test.stem}_{os.getpid()}{_test.suffix}"))  # noqa: F405
