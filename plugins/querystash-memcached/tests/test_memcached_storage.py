"""MemcachedStorage on its own, against real memcached processes: the Storage
contract, key safety, item size limits, expiry, configuration errors."""

from __future__ import annotations

import logging
import time
from collections import Counter

import pytest
from pymemcache.client.base import Client
from querystash_memcached import MemcachedStorage
from querystash_memcached._keys import MAX_KEY

from querystash.testing.servers import MemcachedServer

from .conftest import flush, need_memcached


@pytest.fixture
def store(memcached_server):
    memcached_server.ensure_running()
    flush(memcached_server.url)
    storage = MemcachedStorage(servers=[memcached_server.url], key_prefix="t:")
    yield storage
    storage.close()


def raw(storage: MemcachedStorage, name: str):
    """What the server holds under the memcached key ``name``."""
    return storage.servers[0].run(Client.get, name)


# -- the contract -------------------------------------------------------------------


def test_get_many_in_order_with_none_for_missing(store):
    store.set("a", b"1", 60)
    store.set("c", b"3", 60)
    assert store.get_many(["c", "b", "a", "c"]) == [b"3", None, b"1", b"3"]


def test_get_many_is_one_round_trip_per_server(store):
    before = store.counters["round trips"]
    store.get_many([f"k{i}" for i in range(20)])
    assert store.counters["round trips"] == before + 1


def test_small_fills_are_not_acknowledged_large_ones_are(store):
    from querystash import QUIET_LIMIT

    before = store.counters["round trips"]
    for i in range(50):  # noreply: nothing left unread for the next call on the connection
        store.set("small", str(i).encode(), 60)
        assert store.get_many(["small", "none"]) == [str(i).encode(), None]
    assert store.counters["round trips"] == before + 50  # the gets only
    big = b"x" * (QUIET_LIMIT + 1)
    store.set("big", big, 60)
    assert store.counters["round trips"] == before + 51
    assert store.get_many(["big"]) == [big]


def test_add_many_keeps_existing_values_and_reports_them(store):
    store.set("old", b"kept", 60)
    assert store.add_many({"old": b"new", "fresh": b"v"}, 60) == {"old"}
    assert store.get_many(["old", "fresh"]) == [b"kept", b"v"]


def test_add_many_uses_memcached_add_in_one_round_trip(store, memcached_server):
    host, port = memcached_server.url.rsplit(":", 1)
    before = store.counters["round trips"]
    store.add_many({f"s{i}": b"x" for i in range(5)}, 60)
    assert store.counters["round trips"] == before + 1
    # "add" never overwrites: a second add of the same keys stores nothing.
    assert store.add_many({f"s{i}": b"y" for i in range(5)}, 60) == {f"s{i}" for i in range(5)}
    assert set(store.get_many([f"s{i}" for i in range(5)])) == {b"x"}


def test_delete_many_is_batched_and_ignores_missing_keys(store):
    store.add_many({f"d{i}": b"x" for i in range(10)}, 60)
    before = store.counters["round trips"]
    store.delete_many([f"d{i}" for i in range(10)] + ["never-there"])
    assert store.counters["round trips"] == before + 1
    assert store.get_many([f"d{i}" for i in range(10)]) == [None] * 10


def delete_then_read(store) -> list:
    """delete_get_many on keys set just before: what it read, in order."""
    store.add_many({"a": b"1", "b": b"2", "c": b"3"}, 60)
    return store.delete_get_many(["a", "b"], ["a", "c", "x", "b"])


def test_delete_get_many_reads_after_deleting_in_one_round_trip(store):
    before = store.counters["round trips"]
    assert delete_then_read(store) == [None, b"3", None, None]
    assert store.counters["round trips"] == before + 2  # the add_many, then this call
    assert store.get_many(["a", "b", "c"]) == [None, None, b"3"]


def test_delete_get_many_control_reading_before_deleting_is_caught(store, monkeypatch):
    # Positive control: a planted version that reads first sees the deleted
    # values, which the test above rejects.
    from querystash_memcached import storage as module

    def read_first(client, deletes, names):
        found = client.get_many(names)
        client.delete_many(deletes, True)
        return found

    monkeypatch.setattr(module, "_delete_get_many", read_first)
    assert delete_then_read(store) != [None, b"3", None, None]


def test_delete_get_many_leaves_nothing_unread_on_the_connection(store):
    for i in range(50):  # noreply deletes: the next call reads only its own answer
        store.add_many({"d": str(i).encode(), "keep": b"k"}, 60)
        assert store.delete_get_many(["d"], ["d", "keep"]) == [None, b"k"]
        assert store.get_many(["keep", "d"]) == [b"k", None]


def test_delete_get_many_with_nothing_to_read_still_acknowledges(store):
    store.add_many({"a": b"1"}, 60)
    before = store.counters["round trips"]
    assert store.delete_get_many(["a"], []) == []
    assert store.counters["round trips"] == before + 1
    assert store.get_many(["a"]) == [None]


def test_values_are_bytes_unchanged(store):
    value = bytes(range(256)) * 3 + b"\r\nEND\r\n"
    store.set("bin", value, 60)
    assert store.get_many(["bin"]) == [value]


def test_timeouts_over_thirty_days_are_not_read_as_dates(store):
    store.set("long", b"v", 40 * 24 * 3600)  # a relative 40 days would be "1970" to memcached
    assert store.get_many(["long"]) == [b"v"]


def test_timeouts_expire(store):
    store.set("short", b"v", 1)
    time.sleep(2.1)
    assert store.get_many(["short"]) == [None]


# -- key safety ---------------------------------------------------------------------


@pytest.mark.parametrize("key", [
    "x" * 5000,
    "qs:t:app_book:title=Hello World",
    "clé:ünïcödé:書",
    "tab\there",
    "newline\r\nset evil 0 0 1",
    "nul\x00byte",
    "#looks-hashed",
])
def test_any_key_works_and_unsafe_ones_are_hashed(store, key):
    store.set(key, b"v", 60)
    assert store.get_many([key]) == [b"v"]
    name = store.key(key)
    assert len(name.encode()) <= MAX_KEY
    assert name.isascii() and name.isprintable() and " " not in name
    assert name.startswith("t:#")
    assert raw(store, name) == b"v"
    store.delete_many([key])
    assert store.get_many([key]) == [None]


def test_safe_keys_are_kept_readable(store):
    store.set("qs:t:testapp_book", b"v", 60)
    assert store.key("qs:t:testapp_book") == "t:qs:t:testapp_book"
    assert raw(store, "t:qs:t:testapp_book") == b"v"


def test_a_key_at_the_limit_is_kept_one_over_is_hashed(store):
    room = MAX_KEY - len("t:")
    assert store.key("a" * room) == "t:" + "a" * room
    assert store.key("a" * (room + 1)).startswith("t:#")


def test_distinct_unsafe_keys_do_not_collide(store):
    keys = ["a b", "a  b", "a\tb", "é", "e", "x" * 300, "x" * 301]
    store.add_many({k: k.encode() for k in keys}, 60)
    assert store.get_many(keys) == [k.encode() for k in keys]


# -- values over the item size limit ------------------------------------------------


def test_oversized_value_is_skipped_counted_and_logged_once(store, caplog):
    caplog.set_level(logging.WARNING, logger="querystash.memcached")
    big = b"x" * (store.max_item_size + 1)
    store.set("big", big, 60)
    store.set("big2", big, 60)
    assert store.get_many(["big", "big2"]) == [None, None]
    assert store.counters["oversized values skipped"] == 2
    assert store.stats()["oversized values skipped"] == 2
    warnings = [r for r in caplog.records if "max_item_size" in r.getMessage()]
    assert len(warnings) == 1
    store.set("small", b"ok", 60)  # the store still works
    assert store.get_many(["small"]) == [b"ok"]


def test_lower_max_item_size_setting(memcached_server):
    flush(memcached_server.url)
    storage = MemcachedStorage(servers=[memcached_server.url], max_item_size=1000)
    storage.set("a", b"x" * 2000, 60)
    storage.set("b", b"x" * 500, 60)
    assert storage.get_many(["a", "b"]) == [None, b"x" * 500]
    # an add it cannot make is reported as "not added": the core re-reads the
    # key, finds nothing and does not fill
    assert storage.add_many({"c": b"x" * 2000, "d": b"x"}, 60) == {"c"}
    assert storage.get_many(["c", "d"]) == [None, b"x"]
    storage.close()


def test_value_refused_by_a_server_with_a_smaller_item_limit(caplog):
    need_memcached()
    caplog.set_level(logging.WARNING, logger="querystash.memcached")
    with MemcachedServer(extra_args=["-I", "64k", "-o", "slab_chunk_max=32768"]) as server:
        # The setting says 1 MiB, the server only takes 64 KiB: not an error.
        storage = MemcachedStorage(servers=[server.url])
        storage.set("big", b"x" * 200_000, 60)
        storage.set("big", b"x" * 200_000, 60)
        assert storage.get_many(["big"]) == [None]
        assert storage.counters["values refused by the server"] == 2
        assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
        storage.set("small", b"ok", 60)
        assert storage.get_many(["small"]) == [b"ok"]
        storage.close()


# -- failures raise, never read as "missing" ------------------------------------------


def test_a_dead_server_raises_on_every_call():
    need_memcached()
    with MemcachedServer() as server:
        storage = MemcachedStorage(servers=[server.url], timeout=0.3, connect_timeout=0.3)
        storage.set("k", b"v", 60)
        server.kill()
        for call in (lambda: storage.get_many(["k"]), lambda: storage.set("k", b"v", 60),
                     lambda: storage.add_many({"k": b"v"}, 60),
                     lambda: storage.delete_many(["k"])):
            for _ in range(3):  # no state turns a later call into a silent default
                with pytest.raises(Exception):  # noqa: B017 - any client error will do
                    call()
        server.start()
        assert storage.get_many(["k"]) == [None]  # back, empty, reachable again
        storage.close()


def test_a_paused_server_times_out():
    need_memcached()
    with MemcachedServer() as server:
        storage = MemcachedStorage(servers=[server.url], timeout=0.2, connect_timeout=0.2)
        storage.set("k", b"v", 60)
        # the fill is sent with noreply: read it back so it is stored before the pause
        assert storage.get_many(["k"]) == [b"v"]
        server.pause()
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017
            storage.get_many(["k"])
        assert time.monotonic() - started < 1.5
        server.resume()
        assert storage.get_many(["k"]) == [b"v"]
        storage.close()


# -- pools ----------------------------------------------------------------------------


def test_keys_spread_over_a_pool_and_placement_is_stable(pool3):
    urls = [s.url for s in pool3]
    storage = MemcachedStorage(servers=urls)
    keys = [f"qs:0.1.0:e:{i:040x}" for i in range(3000)]
    spread = Counter(storage.server_for(k).label for k in keys)
    assert set(spread) == set(urls)
    assert min(spread.values()) > 600  # roughly a third each
    again = MemcachedStorage(servers=urls)
    assert all(storage.server_for(k).label == again.server_for(k).label for k in keys)
    # every key is on the server the ring says, one round trip per server
    storage.add_many({k: b"v" for k in keys[:50]}, 60)
    before = storage.counters["round trips"]
    assert storage.get_many(keys[:50]) == [b"v"] * 50
    assert storage.counters["round trips"] - before == 3
    for k in keys[:50]:
        assert storage.server_for(k).run(Client.get, storage.key(k)) == b"v"
    storage.close()
    again.close()


@pytest.mark.parametrize("delete", [
    lambda storage, keys: storage.delete_many(keys),
    lambda storage, keys: storage.delete_get_many(keys, keys[:5]),
], ids=["delete_many", "delete_get_many"])
def test_deletions_reach_live_servers_when_one_is_dead(pool3, delete):
    urls = [s.url for s in pool3]
    storage = MemcachedStorage(servers=urls, timeout=0.3, connect_timeout=0.3)
    keys = [f"k{i}" for i in range(60)]
    storage.add_many({k: b"v" for k in keys}, 60)
    dead = storage.server_for(keys[0])
    pool3[urls.index(dead.label)].kill()
    with pytest.raises(Exception):  # noqa: B017
        delete(storage, keys)
    alive = [k for k in keys if storage.server_for(k) is not dead]
    assert storage.get_many(alive) == [None] * len(alive)
    storage.close()


def test_delete_get_many_on_a_pool(pool3):
    urls = [s.url for s in pool3]
    storage = MemcachedStorage(servers=urls, timeout=0.3, connect_timeout=0.3)
    keys = [f"k{i}" for i in range(60)]
    storage.add_many({k: b"v" for k in keys}, 60)
    one = storage.server_for(keys[0])
    # read only keys of one server: the other servers' deletes are acknowledged alone
    readable = [k for k in keys if storage.server_for(k) is one][:3] + ["absent"]
    before = storage.counters["round trips"]
    got = storage.delete_get_many(keys[:40], readable)
    assert got == [None if k in keys[:40] else (b"v" if k in keys else None) for k in readable]
    servers = {storage.server_for(k) for k in keys[:40]} | {storage.server_for(k)
                                                             for k in readable}
    assert storage.counters["round trips"] - before == len(servers)
    assert storage.get_many(keys[:40]) == [None] * 40
    assert storage.get_many(keys[40:]) == [b"v"] * 20
    storage.close()


def test_stats_per_server_and_totals(pool3):
    urls = [s.url for s in pool3]
    storage = MemcachedStorage(servers=urls)
    storage.add_many({f"k{i}": b"v" for i in range(30)}, 60)
    storage.get_many(["k1", "nope"])
    stats = storage.stats()
    assert stats["servers"] == 3 and stats["servers unreachable"] == 0
    assert stats["curr_items"] == 30
    assert stats["get_hits"] == 1 and stats["get_misses"] == 1
    for field in ("evictions", "bytes", "limit_maxbytes"):
        assert field in stats
    assert stats["limit_maxbytes"] == 3 * 64 * 1024 * 1024
    for url in urls:
        assert "curr_items=" in stats[f"server {url}"]
    pool3[1].kill()
    stats = storage.stats()
    assert stats["servers unreachable"] == 1
    assert stats[f"server {urls[1]}"].startswith("unreachable")
    storage.close()


# -- configuration --------------------------------------------------------------------


@pytest.mark.parametrize("section, named", [
    ({"servers": "127.0.0.1:11211"}, "servers"),
    ({"servers": []}, "servers"),
    ({"servers": ["127.0.0.1"]}, "servers"),
    ({"servers": ["127.0.0.1:0"]}, "servers"),
    ({"servers": ["::1:11211"]}, "servers"),
    ({"servers": ["a:1", "a:1"]}, "servers"),
    ({"timeout": 0}, "timeout"),
    ({"timeout": "fast"}, "timeout"),
    ({"connect_timeout": True}, "connect_timeout"),
    ({"key_prefix": "has space"}, "key_prefix"),
    ({"key_prefix": "x" * 65}, "key_prefix"),
    ({"max_item_size": 0}, "max_item_size"),
    ({"pool_size": 1.5}, "pool_size"),
    ({"pool_idle_timeout": -1}, "pool_idle_timeout"),
    ({"severs": ["a:1"]}, "severs"),
])
def test_bad_settings_raise_a_value_error_naming_the_key(section, named):
    with pytest.raises(ValueError, match=named):
        MemcachedStorage(**section)


@pytest.mark.parametrize("servers", [
    ["127.0.0.1:11211"], ["localhost:1", "[::1]:11211"], ["/run/memcached.sock"],
    ["unix:/run/memcached.sock"],
])
def test_good_server_specs(servers):
    MemcachedStorage(servers=servers).close()


def test_store_errors_name_the_server():
    from querystash import StorageError

    storage = MemcachedStorage(servers=["127.0.0.1:1"], connect_timeout=0.2)
    try:
        with pytest.raises(StorageError) as info:
            storage.get_many(["k"])
    finally:
        storage.close()
    assert str(info.value).startswith("memcached server 127.0.0.1:1: ")


# -- counters (site-wide stats) ---------------------------------------------------------


def test_incr_many_creates_and_adds(store):
    store.incr_many({"c:a": 2, "c:b": 5})
    store.incr_many({"c:a": 3})
    assert store.get_many(["c:a", "c:b", "c:none"]) == [b"5", b"5", None]


def test_incr_many_from_threads_loses_nothing(store):
    import threading

    # Threads creating the same counter at once: one add wins, the others incr.
    def add():
        for _ in range(50):
            store.incr_many({"c:race": 1})

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get_many(["c:race"]) == [b"200"]


def test_incr_many_on_a_pool_reaches_each_key_s_server(pool3):
    storage = MemcachedStorage(servers=[s.url for s in pool3])
    try:
        keys = [f"c:{i}" for i in range(30)]
        storage.incr_many(dict.fromkeys(keys, 1))
        storage.incr_many(dict.fromkeys(keys, 4))
        assert storage.get_many(keys) == [b"5"] * 30
        assert len({storage.server_for(k).label for k in keys}) == 3
    finally:
        storage.close()
