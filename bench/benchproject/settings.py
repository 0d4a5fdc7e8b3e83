"""Settings for one benchmark mode, chosen by environment variables.

BENCH_MODE      a name from bench/modes.py (default "nocache")
BENCH_DB        "sqlite" (BENCH_SQLITE_PATH) or "postgres" (BENCH_PG_NAME on 127.0.0.1:5432)
BENCH_REDIS_URL, BENCH_MEMCACHED   the throwaway servers bench/run started
"""

import os

from bench.modes import MODES

MODE = MODES[os.environ.get("BENCH_MODE", "nocache")]
SECRET_KEY = "querystash-bench-not-secret"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["bench.benchproject.benchapp"]
MIDDLEWARE = []

DB = os.environ.get("BENCH_DB", "sqlite")
if DB == "sqlite":
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_SQLITE_PATH", "/tmp/querystash-bench.sqlite3"),
        # WAL + synchronous=NORMAL, as SQLite sites usually run: a commit is not an fsync
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"},
    }}
elif DB == "postgres":
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        "USER": "postgres",
        "NAME": os.environ.get("BENCH_PG_NAME", "querystash_bench"),
    }}
else:
    raise ValueError(f"BENCH_DB must be sqlite or postgres, not {DB!r}")

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "")
MEMCACHED = os.environ.get("BENCH_MEMCACHED", "")
for url in (REDIS_URL, MEMCACHED):
    host = url.split("//")[-1].split(":")[0]
    if url and host != "127.0.0.1":
        raise ValueError(f"the benchmark only talks to throwaway servers on 127.0.0.1, not {url}")

# The store of the Django cache alias the mode uses (querystash's "django"
# storage and cachalot both use "default").
if MODE.store == "redis":
    DEFAULT_CACHE = {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                     "LOCATION": REDIS_URL}
elif MODE.store == "memcached":
    DEFAULT_CACHE = {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                     "LOCATION": MEMCACHED}
else:
    DEFAULT_CACHE = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                     "OPTIONS": {"MAX_ENTRIES": 1_000_000}}
CACHES = {"default": DEFAULT_CACHE}

if MODE.lib == "querystash" and MODE.full:
    # A full install, configured as a user does: every installed plugin loads
    # (no QUERYSTASH_LOAD_PLUGINS: the driver strips it from the environment,
    # and the worker checks every plugin is registered), and djp.settings()
    # (the last line) adds the app and whatever the plugins add.
    QUERYSTASH = {"MODELS": {"bench.*": {"ops": "all"}},
                  "STORAGE": {"locmem": "django"}.get(MODE.store, MODE.store)}
    if MODE.store == "redis":
        QUERYSTASH["redis"] = {"url": REDIS_URL}
    elif MODE.store == "memcached":
        QUERYSTASH["memcached"] = {"servers": [MEMCACHED]}
elif MODE.lib == "querystash":
    INSTALLED_APPS.append("querystash")
    QUERYSTASH = {"MODELS": {"bench.*": {"ops": "all"}}}
    plugins = [p.removeprefix("querystash-") for p in MODE.plugins]  # entry-point names
    if MODE.name == "querystash-redis" or (
        MODE.name == "querystash-fields" and MODES["querystash-redis"].available()
    ):
        plugins.append("redis")
        QUERYSTASH["STORAGE"] = "redis"
        QUERYSTASH["redis"] = {"url": REDIS_URL}
    elif MODE.name == "querystash-memcached":
        QUERYSTASH["STORAGE"] = "memcached"
        QUERYSTASH["memcached"] = {"servers": [MEMCACHED]}
    else:  # the core's store on CACHES["default"] (querystash-fields without the redis plugin)
        QUERYSTASH["STORAGE"] = "django"
    # Each mode loads exactly the plugins it measures, whatever else is installed.
    os.environ["QUERYSTASH_LOAD_PLUGINS"] = ",".join(sorted(set(plugins)))
elif MODE.lib == "cacheops":
    INSTALLED_APPS.append("cacheops")
    CACHEOPS_REDIS = REDIS_URL
    CACHEOPS = {"bench.*": {"ops": "all", "timeout": 900}}
elif MODE.lib == "cachalot":
    INSTALLED_APPS.append("cachalot")  # its defaults: every table, CACHES["default"]

if MODE.full:
    import djp

    djp.settings(globals())
