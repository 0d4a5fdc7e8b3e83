"""pytest helpers for querystash plugins (and querystash's own suite).

A ``pytest11`` plugin: installed with querystash, loaded by pytest in any
project that has it. Nothing here is autouse, so it changes no test that does
not ask for it. Use with pytest-django (the fixtures need the app registry):

- ``querystash_reset``: empty every configured cache, zero the counters and
  the store breaker, forget the stores earlier tests used;
- ``querystash_runtime``: the live :class:`querystash.RuntimeHandle`;
- ``querystash_count``: :func:`count`, SQL queries and cache hits/misses
  around one call;
- the runtime's life: :func:`rebuild`, :func:`problems`, :func:`uninstalled`,
  :func:`plugin`, :func:`plugins_implementing`;
- the miss path's named points: :func:`checkpoints`, :func:`at_checkpoint`;
- what a read or a write costs the store: :func:`store_calls`;
- outages: :func:`wait_for_store`, :func:`forget_outage`,
  :func:`without_outage_debts` (a positive control's planted bug);
- ``querystash_redis_server`` / ``querystash_memcached_server``: a throwaway
  redis-server / memcached on a free loopback port for the session
  (``querystash.testing.servers``), skipped when the binary is missing, a
  failure instead when ``CI=true``;
- ``querystash.testing.relay.Relay``: a loopback TCP relay in front of a
  server, to hold back replies, drop or cut connections at a chosen moment.
- ``querystash.testing.storecalls.differences``: the same generated store
  calls on two stores of one redis server, and what differs.

The module is imported by pytest before Django is configured: everything
that needs Django is imported inside the functions.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..events import QueryInfo
    from ..handle import RuntimeHandle
    from ..storage import Storage
    from ..strategy import InvalidationStrategy
    from .servers import MemcachedServer, RedisServer

__all__ = [
    "Counted",
    "StoreCalls",
    "at_checkpoint",
    "checkpoints",
    "clear_stores",
    "count",
    "counters",
    "forget_outage",
    "plugin",
    "plugin_hooks",
    "plugins_implementing",
    "problems",
    "read_tags",
    "rebuild",
    "reset",
    "runtime",
    "store_calls",
    "uninstalled",
    "wait_for_store",
    "without_outage_debts",
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
    """Empty every configured cache, zero the counters (memoized functions'
    included) and the breaker, and forget the stores earlier tests used (one
    store, as in production)."""
    from .. import _memoize, _runtime, _stores

    clear_stores()
    _memoize.reset_stats()
    rt = _runtime.current
    if rt is not None:
        rt.stats.reset()
        rt.breaker.reset()
        _stores.forget_others(rt.store)
        if rt.store is not None:
            rt.store.seen.clear()  # the stores were emptied: no stamp is known to exist


def _forget_other_stores() -> None:
    from .. import _runtime, _stores

    rt = _runtime.current
    _stores.forget_others(rt.store if rt is not None else None)


def runtime() -> RuntimeHandle:
    """The live runtime (fails if querystash is not installed in Django)."""
    from ..handle import RuntimeHandle

    return RuntimeHandle(_live())


def _live():
    from .. import _runtime

    rt = _runtime.current
    assert rt is not None, "querystash is not installed: add it to INSTALLED_APPS"
    return rt


def rebuild() -> RuntimeHandle:
    """Build the runtime again, as a change of the ``QUERYSTASH`` setting
    does (every hook called once more); returns the new one."""
    from .. import _runtime
    from ..handle import RuntimeHandle

    _live()
    return RuntimeHandle(_runtime.rebuild())


def problems() -> list[str]:
    """What turned caching off in the live runtime (a plugin that failed to
    load or raised in a hook, a bad setting); empty when caching works."""
    return list(_live().problems)


@contextmanager
def uninstalled() -> Iterator[None]:
    """querystash uninstalled for the block (Django as without it, every
    plugin's patches undone), installed again after it."""
    from .. import _install

    assert _install.installed(), "querystash is not installed"
    _install.uninstall()
    try:
        yield
    finally:
        _install.install()


def plugin(name: str) -> object | None:
    """The plugin object registered as ``name`` (its entry-point name)."""
    from .. import plugins

    plugins.load_plugins()
    return plugins.pm.get_plugin(name)


def plugins_implementing(hook: str, *, builtin: bool = False) -> list[str]:
    """The names of the loaded plugins implementing ``hook`` (e.g.
    ``"querystash_storage"``), installed distributions only unless
    ``builtin``."""
    from .. import plugins

    plugins.load_plugins()
    names = [impl.plugin_name for impl in getattr(plugins.pm.hook, hook).get_hookimpls()]
    return [n for n in names if builtin or n in plugins.versions]


@contextmanager
def checkpoints(hook: Callable[[str], None]) -> Iterator[None]:
    """Call ``hook(point)`` at each named point of the miss path —
    ``"after_stamp_read"`` (the stamps are read, the query not yet run) and
    ``"before_fill"`` (the query ran, the entry not yet stored); never on a
    hit — to land a write, an eviction or a pause exactly there."""
    from .. import _stamps

    previous, _stamps.checkpoint = _stamps.checkpoint, hook
    try:
        yield
    finally:
        _stamps.checkpoint = previous


@contextmanager
def at_checkpoint(name: str, action: Callable[[], None]) -> Iterator[None]:
    """Run ``action()`` once, the first time the miss path reaches ``name``
    (see :func:`checkpoints`)."""
    todo = [action]

    def hook(point: str) -> None:
        if point == name and todo:
            todo.pop()()

    with checkpoints(hook):
        yield


def wait_for_store(seconds: float = 10.0) -> bool:
    """Wait until the live runtime uses its store again after an outage:
    its debt paid by the background thread (requests never call a store
    known to be out). False if that did not happen within ``seconds``."""
    rt = _live()
    deadline = time.monotonic() + seconds
    while not rt.breaker.usable and time.monotonic() < deadline:
        time.sleep(0.01)
    return rt.breaker.usable


def forget_outage() -> None:
    """Make the live runtime's store breaker like another process's, which
    saw no outage and owes nothing (to check what such a process is served)."""
    _live().breaker.reset()


@contextmanager
def without_outage_debts() -> Iterator[None]:
    """Plant a bug for a positive control: store errors and lost
    invalidations incur no debt, so the global stamp is never deleted after
    an outage. A test of outage handling must fail inside this block."""
    from .._breaker import Breaker

    owe, trip = Breaker.owe, Breaker.trip

    def forgetful_owe(self, *, lost=True):
        pass

    def forgetful_trip(self, rt, exc):
        trip(self, rt, exc)
        self.reset()

    Breaker.owe, Breaker.trip = forgetful_owe, forgetful_trip
    try:
        yield
    finally:
        Breaker.owe, Breaker.trip = owe, trip


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


#: the :class:`querystash.Storage` methods :func:`store_calls` records
STORE_METHODS = ("get_many", "add_many", "add_get_many", "set", "delete_many",
                 "delete_get_many")


class StoreCalls(list):
    """The calls :func:`store_calls` saw: ``(method name, first argument)``."""

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self]


@contextmanager
def store_calls(storage: Storage) -> Iterator[StoreCalls]:
    """Record the calls made to ``storage`` (a runtime's ``.storage``) inside
    the block, outermost only: a storage whose ``add_get_many`` calls its own
    ``add_many`` and ``get_many`` counts one call. To count what a read or a
    write costs the store, without timing it."""
    calls = StoreCalls()
    depth = [0]
    originals = {name: getattr(storage, name) for name in STORE_METHODS}

    def wrap(name, method):
        def recording(*args, **kwargs):
            if depth[0] == 0:
                calls.append((name, args[0]))
            depth[0] += 1
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
        return recording

    for name, method in originals.items():
        setattr(storage, name, wrap(name, method))
    try:
        yield calls
    finally:
        for name in originals:
            delattr(storage, name)  # back to the class's method


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
