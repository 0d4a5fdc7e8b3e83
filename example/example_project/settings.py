"""Settings for the querystash example project.

"querystash" is not listed in INSTALLED_APPS: installing the package is
enough, because the last line hands these settings to DJP, which adds the
apps of every installed plugin (querystash's core is one of them).
"""

from pathlib import Path

import djp

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "django-insecure-querystash-example-only"
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = ["shop"]
MIDDLEWARE = []
ROOT_URLCONF = "example_project.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}
# Django's local-memory cache is querystash's embedded store; its default
# MAX_ENTRIES (300) would cull stamps (manage.py check: querystash.W005).
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "OPTIONS": {"MAX_ENTRIES": 100_000}},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

QUERYSTASH = {
    # The built-in store, on CACHES["default"] above, named explicitly: an
    # installed storage plugin (querystash-redis...) is then never the store,
    # so the demo never talks to a server nobody configured for it.
    "STORAGE": "django",
    "MODELS": {"shop.*": {"ops": "all", "timeout": 900}},
}

djp.settings(globals())
