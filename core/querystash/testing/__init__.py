"""pytest helpers for querystash plugins (and querystash's own suite).

A ``pytest11`` plugin: installed with querystash, loaded by pytest in any
project that has it. Nothing here is autouse, so it changes no test that does
not ask for it. Use with pytest-django (the fixtures need the app registry):

- ``querystash_reset``: empty every configured cache, zero the counters and
  the store breaker, forget the stores earlier tests used;
- ``querystash_runtime``: the live :class:`querystash.RuntimeHandle`;
- ``querystash_count``: :func:`count`, SQL queries and cache hits/misses
  around one call;
- ``querystash_redis_server`` / ``querystash_memcached_server``: a throwaway
  redis-server / memcached on a free loopback port for the session
  (``querystash.testing.servers``), skipped when the binary is missing, a
  failure instead when ``CI=true``.

The module is imported by pytest before Django is configured: everything
that needs Django is imported inside the functions.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..events import QueryInfo
    from ..handle import RuntimeHandle
    from ..strategy import InvalidationStrategy
    from .servers import MemcachedServer, RedisServer

__all__ = [
    "Counted",
    "clear_stores",
    "count",
    "counters",
    "plugin_hooks",
    "read_tags",
    "reset",
    "runtime",
]


def clear_stores() -> None:
    """Empty every configured cache and every in-process store (where the
    built-in storage keeps entries for a LocMemCache alias)."""
    from django.conf import settings
    from django.core.cache import caches

    from .._localstore import clear_all

    for alias in settings.CACHES:
        caches[alias].clear()
    clear_all()


def reset() -> None:
    """Empty every configured cache, zero the counters and the breaker, and
    forget the stores earlier tests used (one store, as in production)."""
    from .. import _runtime, _stores
    from .._breaker import Breaker

    clear_stores()
    rt = _runtime.current
    if rt is not None:
        rt.stats.reset()
        rt.breaker = Breaker()
        if rt.store is not None:
            rt.store.breaker = rt.breaker
        _stores.forget_others(rt.store)


def _forget_other_stores() -> None:
    from .. import _runtime, _stores

    rt = _runtime.current
    _stores.forget_others(rt.store if rt is not None else None)


def runtime() -> RuntimeHandle:
    """The live runtime (fails if querystash is not installed in Django)."""
    from .. import _runtime
    from ..handle import RuntimeHandle

    rt = _runtime.current
    assert rt is not None, "querystash is not installed: add it to INSTALLED_APPS"
    return RuntimeHandle(rt)


def counters(model: str = "") -> dict[str, int]:
    """The counters (``hits``, ``misses``, ``fills``...) of ``model``
    (``"app.Model"``), or the totals; as ``manage.py querystash stats``."""
    from .. import _runtime

    rt = _runtime.current
    if rt is None:
        return {}
    if not model:
        return dict(rt.stats.totals())
    return dict(rt.stats.by_model.get(model, {}))


@dataclass
class Counted:
    """What :func:`count` saw around one call."""

    result: Any
    #: SQL statements run on the database (Django's ``CaptureQueriesContext``)
    queries: int
    hits: int
    misses: int
    #: every counter that moved, by how much (``fills``, ``bypasses``...)
    deltas: dict[str, int] = field(default_factory=dict)


def count(fn: Callable[..., Any], *args: Any, using: str = "default",
          model: str = "", **kwargs: Any) -> Counted:
    """Call ``fn(*args, **kwargs)`` and count the SQL queries it ran on
    database ``using`` and the cache hits and misses (of ``model``, or all)."""
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    before = counters(model)
    with CaptureQueriesContext(connections[using]) as ctx:
        result = fn(*args, **kwargs)
    after = counters(model)
    deltas = {k: after.get(k, 0) - before.get(k, 0) for k in {*before, *after}}
    deltas = {k: v for k, v in deltas.items() if v}
    return Counted(result, len(ctx.captured_queries), deltas.get("hits", 0),
                   deltas.get("misses", 0), deltas)


def plugin_hooks(name: str) -> set[str]:
    """The querystash hooks the plugin registered as ``name`` (its entry-point
    name) implements; fails if no such plugin is loaded."""
    from .. import plugins

    plugins.load_plugins()
    loaded = dict(plugins.pm.list_name_plugin())
    assert name in loaded, f"no querystash plugin {name!r}; loaded: {sorted(loaded)}"
    return {caller.name for caller in plugins.pm.get_hookcallers(loaded[name])}


def read_tags(info: QueryInfo, strategies: Iterable[InvalidationStrategy]) -> list[str]:
    """The tags the core gives a read described by ``info`` with only
    ``strategies`` installed (in that order): how strategies compose."""
    from .._runtime import read_tags as combined

    answers = [a for a in (s.query_tags(info) for s in strategies) if a is not None]
    return combined(info.tables, answers)


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
def querystash_reset() -> Iterator[None]:
    """Start the test with empty caches and zeroed counters; leave no store
    of the test's own behind."""
    reset()
    yield
    _forget_other_stores()


@pytest.fixture
def querystash_runtime() -> RuntimeHandle:
    """The live :class:`querystash.RuntimeHandle`."""
    return runtime()


@pytest.fixture
def querystash_count() -> Callable[..., Counted]:
    """:func:`count`: ``querystash_count(fn, *args)`` -> ``Counted``."""
    return count


def _start(server_cls):
    """Start a server, or skip (fail in CI, where it must be there) if it isn't installed."""
    if shutil.which(server_cls.binary) is None:
        msg = f"{server_cls.binary} is not installed: apt-get install {server_cls.binary}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return server_cls().start()


# Session-scoped and lazy: a server starts only when the first test asks for it.
@pytest.fixture(scope="session")
def querystash_redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server for the session (``.url``, ``.pause()``, ``.restart()``...)."""
    from .servers import RedisServer

    server = _start(RedisServer)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def querystash_memcached_server() -> Iterator[MemcachedServer]:
    """A throwaway memcached for the session."""
    from .servers import MemcachedServer

    server = _start(MemcachedServer)
    yield server
    server.stop()
