"""Every fixture the suite shares: a clean querystash per test, counters,
throwaway cache servers and Django cache aliases pointing at them.

Loaded for the core suite and every plugin's tests by the root conftest.py
(``pytest_plugins``). Plain functions live in ``tests/helpers.py``.
"""

from contextlib import contextmanager

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings

from querystash import _compiled, _sitestats
from querystash.testing import counters

# No background flushing of site-wide stats in the test process: it would
# write into the stores tests inspect, at moments no test chose. The tests of
# site-wide stats flush by hand, or in processes of their own.
_sitestats.background = False
# Every read of a remembered query shape also compiles, and raises on any
# difference: the whole suite (the fuzzer included) checks the shapes.
_compiled.CHECK = True


@pytest.fixture(autouse=True)
def fresh_querystash(querystash_reset):
    """Every test starts with an empty store and zeroed counters, and leaves
    no store of its own behind (``querystash.testing``)."""
    yield


@pytest.fixture
def counts():
    """``counts("testapp.Book")`` -> that model's counters (hits, misses...)."""
    return counters


# The servers are querystash.testing's (shipped for plugin authors), under
# the short names this suite uses.
@pytest.fixture(scope="session")
def redis_server(querystash_redis_server):
    return querystash_redis_server


@pytest.fixture(scope="session")
def memcached_server(querystash_memcached_server):
    return querystash_memcached_server


@contextmanager
def _extra_cache(alias, backend, location, options):
    # override_settings fires setting_changed, whose Django handler rebuilds
    # django.core.cache.caches, so the new alias is visible (and gone again on exit).
    with override_settings(
        CACHES={
            **settings.CACHES,
            alias: {"BACKEND": backend, "LOCATION": location, "OPTIONS": options},
        }
    ):
        caches[alias].clear()  # the server is shared by the session: start each test empty
        yield alias


# Short socket timeouts so a test that pauses the server fails fast instead of hanging.
@pytest.fixture
def redis_cache_alias(redis_server):
    """Name of a Django cache ("redis") backed by the throwaway redis server."""
    redis_server.ensure_running()  # an earlier test may have stopped or paused it
    with _extra_cache(
        "redis",
        "django.core.cache.backends.redis.RedisCache",
        redis_server.url,
        {"socket_timeout": 2, "socket_connect_timeout": 2},
    ) as alias:
        yield alias


@pytest.fixture
def memcached_cache_alias(memcached_server):
    """Name of a Django cache ("memcached") backed by the throwaway memcached server."""
    memcached_server.ensure_running()
    with _extra_cache(
        "memcached",
        "django.core.cache.backends.memcached.PyMemcacheCache",
        memcached_server.url,
        {"timeout": 2, "connect_timeout": 2},
    ) as alias:
        yield alias
