"""Settings for a third-party suite: its own settings, on our database, plus querystash.

Environment (set by tests/thirdparty/test_thirdparty.py):
  QS_THIRDPARTY_BASE_SETTINGS  the suite's own settings module, imported and extended
  QS_THIRDPARTY_MODE           "plain" (no querystash) or "cached"
  QS_THIRDPARTY_NAME           suite name, part of the PostgreSQL test database name
  QS_THIRDPARTY_REDIS_URL      the redis server querystash stores into (cached mode)
  QUERYSTASH_TEST_DB, QUERYSTASH_TEST_DB_SUFFIX   as for our own suite
"""

import importlib
import os

import django

_base = importlib.import_module(os.environ["QS_THIRDPARTY_BASE_SETTINGS"])
globals().update({k: v for k, v in vars(_base).items() if k.isupper()})

MODE = os.environ["QS_THIRDPARTY_MODE"]
_DB = os.environ.get("QUERYSTASH_TEST_DB", "sqlite")
_MM = f"{django.VERSION[0]}{django.VERSION[1]}"
if _DB == "sqlite":
    # In memory: the suite runs in one process.
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
elif _DB == "postgres":
    _suffix = os.environ.get("QUERYSTASH_TEST_DB_SUFFIX", "")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": 5432,
            "USER": "postgres",
            "NAME": "postgres",
            "TEST": {
                "NAME": f"test_qs3p_{os.environ['QS_THIRDPARTY_NAME']}_{MODE}_{_MM}{_suffix}"
            },
        }
    }
else:
    raise ValueError(f"QUERYSTASH_TEST_DB must be 'sqlite' or 'postgres', not {_DB!r}")

if MODE == "cached":
    INSTALLED_APPS = [*INSTALLED_APPS, "querystash"]  # noqa: F821 (from the base settings)
    QUERYSTASH = {
        # Every model of every app, every op; get() too (CACHE_GET defaults to True).
        "MODELS": {"*.*": {"ops": "all"}},
        "STORAGE": "redis",
        "redis": {"url": os.environ["QS_THIRDPARTY_REDIS_URL"]},
        # Every hit is also run against the database; a difference raises StaleRead.
        "VERIFY": 1,
        "VERIFY_RAISE": True,
        # The default ignores django_session; the suites' sessions are cached too.
        "IGNORE_TABLES": ["django_migrations"],
        # Each run starts from a new database: never read a previous run's entries.
        "KEY_PREFIX": f"qs3p-{os.environ['QS_THIRDPARTY_NAME']}-{os.getpid()}",
    }
elif MODE != "plain":
    raise ValueError(f"QS_THIRDPARTY_MODE must be 'plain' or 'cached', not {MODE!r}")
