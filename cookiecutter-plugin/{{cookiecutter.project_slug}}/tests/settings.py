"""Settings of the test project: a tiny app, SQLite in a temporary directory."""

import atexit
import os
import shutil
import tempfile

import djp

SECRET_KEY = "{{ cookiecutter.module_name }}-tests-not-secret"
DEBUG = True
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "tests.demo"]  # DJP adds querystash
MIDDLEWARE = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TMP_DIR = tempfile.mkdtemp(prefix="{{ cookiecutter.module_name }}-")
atexit.register(shutil.rmtree, TMP_DIR, ignore_errors=True)
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(TMP_DIR, "db.sqlite3"),
        "TEST": {"NAME": os.path.join(TMP_DIR, "test_db.sqlite3")},
    }
}

# Local memory, with room: Django's default MAX_ENTRIES (300) culls stamps
# (manage.py check: querystash.W005).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                      "OPTIONS": {"MAX_ENTRIES": 100_000}}}

QUERYSTASH = {
    # The core's store on Django's cache (locmem here), whatever else is installed.
    "STORAGE": "django",
    "MODELS": {"demo.*": {"ops": "all", "timeout": 600}},
    # A database trigger keeps demo_counter up to date on every insert into demo_item.
    "{{ cookiecutter.section }}": {"tables": {"demo_counter": ["demo_item"]}},
}

djp.settings(globals())  # last line: DJP adds querystash and fills plugin defaults
