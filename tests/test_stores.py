"""Changing the store strands no invalidation.

``override_settings(CACHES=...)`` / ``(QUERYSTASH=...)`` rebuilds the runtime
on another store; entries filled in a store before such a change are read
again when it comes back. Each test fills a store, writes while another store
is in use, comes back and compares what the cache serves with the database.
Real stores: locmem, redis and memcached (Django's backends and the plugins).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.test import override_settings

from querystash import _runtime, _stamps, _stores
from querystash.testing import wait_for_store
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
DUMMY = {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}


def locmem(location: str) -> dict:
    return {"BACKEND": LOCMEM, "LOCATION": location, "OPTIONS": {"MAX_ENTRIES": 100_000}}


def on_cache(config: dict):
    """querystash's store (CACHES["default"]) becomes ``config``."""
    return override_settings(CACHES={**settings.CACHES, "default": config})


def on_setting(**changes):
    return override_settings(QUERYSTASH={**settings.QUERYSTASH, **changes})


@pytest.fixture
def data():
    alice = Author.objects.create(name="Alice", age=35)
    Book.objects.create(title="One", author=alice)
    Book.objects.create(title="Two", author=alice)
    return alice


def cached():
    return list(Book.objects.order_by("pk").values_list("pk", "title", "status"))


def truth():
    return list(Book.objects.nocache().order_by("pk").values_list("pk", "title", "status"))


def hits(counts):
    return counts("testapp.Book").get("hits", 0)


def prime(counts):
    """Fill the current store; prove the second read is served from it."""
    first = cached()
    before = hits(counts)
    assert cached() == first == truth()
    assert hits(counts) == before + 1, "not served from the cache"
    return first


_n = [0]


def write():
    """Change Book rows (a new title each time); returns nothing to compare."""
    _n[0] += 1
    Book.objects.filter(title__in=["One"] + [f"One-{i}" for i in range(_n[0])]).update(
        title=f"One-{_n[0]}")


def fresh(old=None):
    """The cache serves what the database holds (and not ``old``)."""
    got, db = cached(), truth()
    assert got == db, "stale rows served"
    if old is not None:
        assert db != old, "the write changed nothing: the check could not fail"


@pytest.fixture
def redis_config(redis_cache_alias):
    return dict(settings.CACHES[redis_cache_alias])


@pytest.fixture
def memcached_config(memcached_cache_alias):
    return dict(settings.CACHES[memcached_cache_alias])


@pytest.fixture(params=["locmem", "redis", "memcached"])
def other(request):
    """Another real store for CACHES["default"]."""
    if request.param == "locmem":
        return locmem("querystash-stores-b")
    return request.getfixturevalue(f"{request.param}_config")


# -- CACHES overrides ------------------------------------------------------------------------


def test_fill_outside_write_inside_read_after(data, other, counts):
    old = prime(counts)
    outside = _runtime.current.store
    with on_cache(other):
        assert _runtime.current.store is not outside
        write()
        fresh(old)
    fresh(old)


def test_fill_inside_write_outside_reenter(data, other, counts):
    with on_cache(other):
        old = prime(counts)
    write()
    fresh(old)
    with on_cache(other):
        fresh(old)


def test_the_same_store_again_keeps_its_entries(data, other, counts):
    """Back on a store it knows, the process keeps using its entries: no
    blanket invalidation when nothing was written."""
    prime(counts)
    with on_cache(other):
        prime(counts)
    before = hits(counts)
    fresh()
    assert hits(counts) == before + 1
    with on_cache(other):
        fresh()
    assert hits(counts) == before + 2


def test_nested_overrides_with_writes_at_each_level(data, redis_config, memcached_config,
                                                    counts):
    a_old = prime(counts)                       # A: locmem
    with on_cache(redis_config):                # B: redis
        b_old = prime(counts)
        write()
        fresh(b_old)
        with on_cache(memcached_config):        # C: memcached
            c_old = prime(counts)
            write()
            fresh(c_old)
            with on_cache(locmem("querystash-stores-d")):   # D: another locmem
                d_old = prime(counts)
                write()
                fresh(d_old)
            fresh(c_old)                        # back in C after D's write
            c_old = prime(counts)
        fresh(b_old)                            # back in B after C's and D's writes
        write()
        fresh()
    fresh(a_old)                                # back in A after every write
    with on_cache(memcached_config):
        fresh(c_old)                            # C again, after B's last write
    with on_cache(locmem("querystash-stores-d")):
        fresh(d_old)


def test_override_to_dummy_cache_and_back(data, counts):
    old = prime(counts)
    with on_cache(DUMMY):
        rt = _runtime.current
        assert rt.storage is None and not rt.enabled
        assert any("DummyCache" in p for p in rt.problems)
        write()
        fresh(old)                              # the database answers
        with transaction.atomic():
            write()
        fresh(old)
    fresh(old)                                  # the write inside reached the store
    old = prime(counts)
    with on_cache(DUMMY):
        pass
    write()                                     # and writes after it
    fresh(old)


def test_after_a_dummy_cache_override_the_store_is_back_at_once(data, counts):
    """The store is built on the CACHES being entered, not the one being left
    (querystash's receiver ran before Django's reset of the cache handler: the
    exit left the runtime on the DummyCache, i.e. without a store)."""
    old = prime(counts)
    with on_cache(DUMMY):
        assert _runtime.current.storage is None
    rt = _runtime.current
    assert rt.enabled and rt.storage is not None, rt.problems
    write()
    _runtime.rebuild()
    fresh(old)


def test_each_override_builds_the_store_of_its_own_caches(redis_config, memcached_config):
    from querystash._django_raw import DjangoMemcachedStorage, DjangoRedisStorage
    from querystash._localstore import LocalStorage

    with on_cache(redis_config):
        assert type(_runtime.current.storage) is DjangoRedisStorage
        with on_cache(memcached_config):
            assert type(_runtime.current.storage) is DjangoMemcachedStorage
        assert type(_runtime.current.storage) is DjangoRedisStorage
    assert type(_runtime.current.storage) is LocalStorage


def test_dummy_cache_then_a_store_never_used_before(data, counts):
    """Writes made while no store is in use never reached a store the
    process meets afterwards: everything in it is invalidated before use."""
    with on_cache(locmem("querystash-stores-e")):
        old = prime(counts)
    _stores.forget_others(_runtime.current.store)  # as if never used by this process
    with on_cache(DUMMY):
        write()
    with on_cache(locmem("querystash-stores-e")):
        fresh(old)


def test_a_store_dropped_from_the_list_is_invalidated_before_use(data, monkeypatch, counts):
    monkeypatch.setattr(_stores, "MAX_STORES", 2)
    a = _runtime.current.store
    old = prime(counts)
    with on_cache(locmem("querystash-stores-b")), on_cache(locmem("querystash-stores-c")):
        assert a not in _stores.known, "A should have been dropped"
        write()
    fresh(old)


def test_writes_inside_atomic_inside_an_override(data, other, counts):
    old_a = prime(counts)
    with on_cache(other):
        old_b = prime(counts)
        with transaction.atomic():
            write()
            assert truth() != old_b
        fresh(old_b)
    fresh(old_a)
    with on_cache(other):
        fresh(old_b)


def write_below_django():
    """A write querystash cannot see: only a manual invalidation covers it."""
    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection.cursor()
    raw.execute("UPDATE testapp_book SET status = status + 1")
    raw.close()
    if not connection.get_autocommit():
        connection.connection.commit()


@pytest.mark.parametrize("where", ["locmem", "dummy"])
def test_manual_invalidation_inside_an_override(data, counts, where):
    import querystash

    old = prime(counts)
    with on_cache(locmem("querystash-stores-b") if where == "locmem" else DUMMY):
        write_below_django()
        querystash.invalidate_models("testapp.Book")
    fresh(old)
    old = prime(counts)
    with on_cache(locmem("querystash-stores-b") if where == "locmem" else DUMMY):
        write_below_django()
        querystash.invalidate_all()
    fresh(old)


def test_flush_inside_an_override(data, counts):
    from django.core.management import call_command

    old = prime(counts)
    with on_cache(locmem("querystash-stores-b")):
        call_command("flush", interactive=False, verbosity=0)
    fresh(old)
    assert truth() == []


# -- a fill racing the switch: the pre- and post-commit invalidations ---------------------


@contextmanager
def paused_fill():
    """A reader thread that reads Books, then waits just before filling the
    store its runtime was using until ``release()``."""
    reached, go = threading.Event(), threading.Event()
    reader = {}

    def checkpoint(name):
        if name == "before_fill" and threading.get_ident() == reader.get("ident"):
            reached.set()
            assert go.wait(10)

    def read():
        reader["ident"] = threading.get_ident()
        try:
            reader["rows"] = cached()
        finally:
            connections.close_all()

    thread = threading.Thread(target=read)

    def start():
        thread.start()
        assert reached.wait(10), "the reader never reached its fill"

    def release():
        go.set()
        thread.join(10)
        assert not thread.is_alive()

    previous, _stamps.checkpoint = _stamps.checkpoint, checkpoint
    try:
        yield start, release
    finally:
        _stamps.checkpoint = previous
        go.set()
        if thread.is_alive():
            thread.join(10)


def test_transaction_entered_before_the_override_commits_inside_it(data, other, counts):
    """Written in A, committed in B: an entry filled in A while the
    transaction ran (with the rows committed before it) dies at the commit."""
    old = prime(counts)
    commit_in_b(other)
    fresh(old)


def commit_in_b(other):
    """Write in a transaction begun on A; a reader fills A with the rows
    committed before it; the commit happens on ``other``."""
    override = on_cache(other)
    with paused_fill() as (start, release):
        try:
            with transaction.atomic():
                write()
                start()                       # reads A: the old, committed rows
                override.enable()
                release()                     # ... and fills A with them
            # committed here, on B
        finally:
            override.disable()


def test_transaction_spans_the_override_exit(data, other, counts):
    """Written in B, committed after going back to A: an entry B received
    while the transaction ran dies at the commit."""
    override = on_cache(other)
    override.enable()
    try:
        old = prime(counts)
        with paused_fill() as (start, release), transaction.atomic():
            write()
            start()                           # reads B
            override.disable()                # back on A, the transaction still open
            override = None
            release()                         # ... and fills B with the old rows
        fresh(old)
    finally:
        if override is not None:
            override.disable()
    with on_cache(other):
        fresh(old)


# -- QUERYSTASH overrides: KEY_PREFIX and STORAGE ----------------------------------------------


def test_key_prefix_change(data, counts):
    old = prime(counts)
    with on_setting(KEY_PREFIX="tenant2"):
        assert _runtime.current.stamp_prefix == "tenant2:t:"
        write()
        fresh(old)
    fresh(old)
    with on_setting(KEY_PREFIX="tenant2"):
        old = prime(counts)
    write()
    with on_setting(KEY_PREFIX="tenant2"):
        fresh(old)


def redis_plugin(server):
    return on_setting(STORAGE="redis", redis={"url": server.url, "socket_timeout": 2,
                                              "socket_connect_timeout": 2})


def memcached_plugin(server):
    return on_setting(STORAGE="memcached", memcached={"servers": [server.url]})


def test_storage_plugins_django_redis_memcached_and_back(
        data, redis_server, redis_cache_alias, memcached_server, memcached_cache_alias, counts):
    django_old = prime(counts)
    with redis_plugin(redis_server):
        assert _runtime.current.storage.name == "redis"
        redis_old = prime(counts)
        write()
        fresh(redis_old)
        with memcached_plugin(memcached_server):
            assert _runtime.current.storage.name == "memcached"
            mc_old = prime(counts)
            write()
            fresh(mc_old)
            with on_setting(STORAGE="django"):
                assert _runtime.current.storage.name == "django"
                fresh(django_old)
                django_old = prime(counts)
                write()
                fresh(django_old)
            fresh(mc_old)
        fresh(redis_old)
        redis_old = prime(counts)
    fresh(django_old)
    write()
    with redis_plugin(redis_server):
        fresh(redis_old)
    with memcached_plugin(memcached_server):
        fresh(mc_old)


def test_redis_plugin_with_another_key_prefix(data, redis_server, redis_cache_alias, counts):
    """The plugin's store is (server, stamp prefix): KEY_PREFIX makes another."""
    with redis_plugin(redis_server):
        old = prime(counts)
        with on_setting(STORAGE="redis", KEY_PREFIX="tenant2",
                        redis={"url": redis_server.url}):
            assert _runtime.current.storage.name == "redis"
            write()
            fresh(old)
        fresh(old)


# -- a store that misses an invalidation ------------------------------------------------------


def test_a_store_that_misses_an_invalidation_owes_its_global_stamp(
        data, redis_server, redis_cache_alias, counts):
    short = {"BACKEND": "django.core.cache.backends.redis.RedisCache",
             "LOCATION": redis_server.url,
             "OPTIONS": {"socket_timeout": 0.3, "socket_connect_timeout": 0.3}}
    with on_cache(short):
        store = _runtime.current.store
        old = prime(counts)
    redis_server.pause()                      # a frozen server keeps its data
    try:
        write()                               # can't reach the redis store
    finally:
        redis_server.resume()
    assert store.breaker.owes_global
    with on_cache(short):
        assert _runtime.current.store is store
        fresh(old)                            # the database's rows while it is owed
        assert wait_for_store()               # paid by the background thread
        assert not store.breaker.owes_global
        fresh(old)                            # paid before the store was read
        prime(counts)                         # and the store works again


def test_a_new_store_that_is_out_is_paid_in_the_background(
        data, redis_server, redis_cache_alias, counts, monkeypatch):
    """A store new to the process owes its global stamp. Adopted while it is
    frozen, it is not read by any request — not even to pay — until the
    breaker's background thread, started by the debt, has paid it."""
    short = {"BACKEND": "django.core.cache.backends.redis.RedisCache",
             "LOCATION": redis_server.url,
             "OPTIONS": {"socket_timeout": 0.3, "socket_connect_timeout": 0.25}}
    request_thread, calls = threading.get_ident(), []
    redis_server.pause()
    try:
        with on_cache(short):
            rt = _runtime.current
            store = rt.store
            assert store.breaker.owes_global and not store.breaker.lost
            for name in ("get_many", "add_many", "add_get_many", "set", "delete_many"):
                original = getattr(rt.storage, name)

                def counted(*args, _original=original, _name=name, **kwargs):
                    if threading.get_ident() == request_thread:
                        calls.append(_name)
                    return _original(*args, **kwargs)

                monkeypatch.setattr(rt.storage, name, counted)
            for _ in range(3):
                assert cached() == truth()
                write()
            assert calls == [], calls  # the database answered, the debt grew
            assert store.breaker.owes_global and store.breaker.lost
    finally:
        redis_server.resume()
    with on_cache(short):
        assert _runtime.current.store is store
        assert wait_for_store(), "the new store's debt was never paid"
        prime(counts)  # used again once paid


def test_one_store_no_fan_out(data, monkeypatch, counts):
    """Production: one store, and the write path never reaches the fan-out."""
    def fan_out(*args):
        raise AssertionError("fan-out with a single store")

    monkeypatch.setattr(_stores, "fan_out", fan_out)
    assert _stores.known == (_runtime.current.store,)
    old = prime(counts)
    write()
    with transaction.atomic():
        write()
    fresh(old)


# -- positive controls: without the fan-out the stale read is there --------------------------


@pytest.fixture
def no_fan_out(monkeypatch):
    monkeypatch.setattr(_stores, "fan_out", lambda *args: None)


def stale(old):
    assert truth() != old
    assert cached() == old, "fresh rows without the fan-out: the tests above prove nothing"


def test_positive_control_fill_outside_write_inside(data, other, counts, no_fan_out):
    old = prime(counts)
    with on_cache(other):
        write()
    stale(old)


def test_positive_control_dummy_cache(data, counts, no_fan_out):
    old = prime(counts)
    with on_cache(DUMMY):
        write()
    stale(old)


def test_positive_control_key_prefix(data, counts, no_fan_out):
    old = prime(counts)
    with on_setting(KEY_PREFIX="tenant2"):
        write()
    stale(old)


def test_positive_control_transaction_committed_in_another_store(data, counts, no_fan_out):
    old = prime(counts)
    commit_in_b(locmem("querystash-stores-b"))
    stale(old)
