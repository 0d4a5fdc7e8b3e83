"""Settings of the page benchmark's site: the micro benchmark's settings for the
mode (bench/benchproject/settings.py: BENCH_MODE, BENCH_DB, the servers), plus
what a served site needs.

BENCH_PAGE_COUNT=1 adds the counting middleware (bench/page/counting.py); the
timed servers run without it.
"""

import os
from pathlib import Path

from bench.benchproject.settings import *  # noqa: F403
from bench.benchproject.settings import DATABASES, MIDDLEWARE

ROOT_URLCONF = "bench.page.urls"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# Persistent connections, as production sites run: without them every request
# would pay a PostgreSQL connection, and a page served from the cache would not.
DATABASES["default"]["CONN_MAX_AGE"] = None
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [Path(__file__).resolve().parent / "templates"],
    "OPTIONS": {},  # DEBUG is off: Django caches the compiled templates
}]
MIDDLEWARE = list(MIDDLEWARE)
if os.environ.get("BENCH_PAGE_COUNT") == "1":
    MIDDLEWARE.insert(0, "bench.page.counting.CountingMiddleware")
