"""Throwaway cache servers and Django cache aliases pointing at them.

Loaded for the core suite and every plugin's tests by the root conftest.py.
"""

import os
import shutil
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings

from tests.servers import MemcachedServer, RedisServer

IN_CI = os.environ.get("CI", "").lower() == "true"


def _start(server_cls):
    """Start a server, or skip (fail in CI, where it must be there) if it isn't installed."""
    if shutil.which(server_cls.binary) is None:
        msg = (
            f"{server_cls.binary} is not installed: run ./scripts/test, "
            f"or apt-get install {server_cls.binary}"
        )
        if IN_CI:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return server_cls().start()


# Session-scoped and lazy: a server starts only when the first test asks for it.
@pytest.fixture(scope="session")
def redis_server():
    server = _start(RedisServer)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def memcached_server():
    server = _start(MemcachedServer)
    yield server
    server.stop()


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
