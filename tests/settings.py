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

# Counts in the cache (API rate limits, failed log-ins) start afresh in every test run.
CACHES["default"]["KEY_PREFIX"] = f"vsm-test-{os.getpid()}"  # noqa: F405
if "LOCATION" in CACHES["default"] and CACHES["default"]["BACKEND"].endswith("FileBasedCache"):  # noqa: F405
    CACHES["default"]["LOCATION"] += f"-{os.getpid()}"  # noqa: F405
# The suite makes thousands of API calls a minute as the same few users; tests of the limit set it.
VSM_API_RATE = "1000000/minute"
