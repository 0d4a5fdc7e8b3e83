"""Django settings for the querystash test suite.

QUERYSTASH_TEST_DB picks the database: "sqlite" (default) or "postgres"
(127.0.0.1:5432, user postgres, trust auth). Both define a second alias "other" for
multi-database tests.
"""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import django

SECRET_KEY = "querystash-tests-not-secret"
DEBUG = False
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "querystash",
    "tests.testapp",
    "tests.fuzzapp",  # the differential fuzzer's schema (tests/fuzz)
    "tests.fieldtypes.apps.FieldtypesConfig",
    # The example project's shop app (example/shop): the docs' examples use
    # its models, so a reader can paste them into that project's shell.
    "shop",
]
_EXAMPLE = str(Path(__file__).resolve().parent.parent / "example")
if _EXAMPLE not in sys.path:
    sys.path.append(_EXAMPLE)
MIDDLEWARE = []

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# File-based SQLite (not :memory:) so that other processes started by a test can open the
# same database. The directory is shared with child processes through the environment.
TMP_DIR = os.environ.get("QUERYSTASH_TEST_TMPDIR")
if not TMP_DIR:
    TMP_DIR = tempfile.mkdtemp(prefix="querystash-tests-")
    os.environ["QUERYSTASH_TEST_TMPDIR"] = TMP_DIR
    atexit.register(shutil.rmtree, TMP_DIR, ignore_errors=True)

# Two Django versions must never share one PostgreSQL test database.
DJANGO_MM = f"{django.VERSION[0]}{django.VERSION[1]}"

DB = os.environ.get("QUERYSTASH_TEST_DB", "sqlite")
# QUERYSTASH_TEST_DB_SUFFIX keeps concurrent runs on one PostgreSQL server apart.
DB_SUFFIX = os.environ.get("QUERYSTASH_TEST_DB_SUFFIX", "")
if DB == "sqlite":

    def _db(name):
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(TMP_DIR, f"{name}.sqlite3"),
            "TEST": {"NAME": os.path.join(TMP_DIR, f"test_{name}.sqlite3")},
            "OPTIONS": {"timeout": 20},  # wait for other processes' write locks
        }

elif DB == "postgres":

    def _db(name):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": 5432,
            "USER": "postgres",
            "NAME": name,
            "TEST": {"NAME": f"test_{name}_{DJANGO_MM}{DB_SUFFIX}"},
        }

else:
    raise ValueError(f"QUERYSTASH_TEST_DB must be 'sqlite' or 'postgres', not {DB!r}")

if DB == "postgres":
    INSTALLED_APPS.append("django.contrib.postgres")  # ArrayField, HStoreField (fieldtypes)

DATABASES = {
    "default": _db("querystash"),
    "other": _db("querystash_other"),
}

CACHES = {
    # MAX_ENTRIES: Django's default (300) culls stamps (check querystash.W005).
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "OPTIONS": {"MAX_ENTRIES": 100_000}},
}

QUERYSTASH = {
    # Pinned: an installed storage plugin (querystash-redis...) must not make
    # the core's tests use its default server, which may be a shared one.
    "STORAGE": "django",
    "MODELS": {
        "testapp.*": {"ops": "all", "timeout": 600},
        "fuzzapp.*": {"ops": "all", "timeout": 600},
        "shop.*": {"ops": "all", "timeout": 600},
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"querystash": {"handlers": ["console"], "level": "WARNING"}},
}
