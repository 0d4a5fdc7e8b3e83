"""Settings for the querystash example project.

"querystash" is not listed in INSTALLED_APPS: installing the package is
enough, because the last line hands these settings to DJP, which adds the
apps of every installed plugin (querystash's core is one of them).
"""

import os
from importlib.util import find_spec
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
        # QUERYSTASH_EXAMPLE_DB: another file (tests/test_debug_toolbar_browser.py)
        "NAME": os.environ.get("QUERYSTASH_EXAMPLE_DB") or BASE_DIR / "db.sqlite3",
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

# The debug toolbar with querystash's panel, when asked for and installed:
#   QUERYSTASH_EXAMPLE_TOOLBAR=1 python manage.py runserver, then open /page/
# (docs/observing.md). Off by default: the benchmarks serve this project too.
if os.environ.get("QUERYSTASH_EXAMPLE_TOOLBAR") == "1" and find_spec("debug_toolbar"):
    import debug_toolbar.settings

    INSTALLED_APPS += ["django.contrib.staticfiles", "debug_toolbar"]
    MIDDLEWARE += ["debug_toolbar.middleware.DebugToolbarMiddleware"]
    STATIC_URL = "/static/"
    INTERNAL_IPS = ["127.0.0.1"]
    DEBUG_TOOLBAR_PANELS = [
        *debug_toolbar.settings.PANELS_DEFAULTS,
        "querystash.debug_toolbar.QuerystashPanel",
    ]

TEMPLATES = [
    {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True},
]

djp.settings(globals())
