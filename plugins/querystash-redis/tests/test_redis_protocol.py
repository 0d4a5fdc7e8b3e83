"""The stamp protocol on one redis server: a hit is one MGET, stamps are
created with SET NX, many tags are invalidated by one DEL, every key has a TTL."""

from __future__ import annotations

import pytest

import querystash
from tests.testapp.models import Author, Book, Tag

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def data():
    alice = Author.objects.create(name="Alice")
    Book.objects.create(title="One", author=alice)
    Book.objects.create(title="Two", author=alice)
    return alice


def titles():
    return list(Book.objects.order_by("pk").values_list("title", flat=True))


def test_hit_is_one_mget_of_entry_and_stamps(data, redis_single, use_redis, monitor, counts):
    with use_redis(url=redis_single.url) as rt:
        assert titles() == ["One", "Two"]  # miss, fill
        with monitor(redis_single.port) as m:
            assert titles() == ["One", "Two"]
        assert counts("testapp.Book")["hits"] == 1
        assert len(m.commands) == 1, m.commands
        verb, entry, *stamps = m.commands[0].split(" ")
        assert verb == "MGET"
        assert entry.startswith("qs:") and ":e:" in entry
        assert sorted(stamps) == ["{qs:t:}*", "{qs:t:}testapp_book"]
        assert rt.storage.redis_key("qs:t:testapp_book") == "{qs:t:}testapp_book"


def test_miss_creates_stamps_with_set_nx_and_keeps_existing_ones(
    data, redis_single, rclient, use_redis, monitor, counts
):
    r = rclient(redis_single.port)
    with use_redis(url=redis_single.url):
        # A stamp another process created (after this process began to use the
        # store: a store new to a process loses its global stamp, see _stores).
        r.set("{qs:t:}*", b"12345678", ex=1000)
        with monitor(redis_single.port) as m:
            assert titles() == ["One", "Two"]
        sets = m.named("SET")
        stamp_sets = [c for c in sets if "{qs:t:}" in c]
        # one SET NX per stamp this process has not seen in the store, sent
        # in one pipeline with the MGET that follows them (one round trip)
        assert stamp_sets and all(" NX " in c for c in stamp_sets), stamp_sets
        assert any("{qs:t:}testapp_book" in c for c in stamp_sets), stamp_sets
        assert m.commands.index(stamp_sets[-1]) < m.commands.index(m.named("MGET")[0])
        assert r.get("{qs:t:}*") == b"12345678"  # left alone
        assert titles() == ["One", "Two"]
        assert counts("testapp.Book")["hits"] == 1  # entry stored under the existing stamp


def test_fill_is_a_set_whose_reply_is_skipped(data, redis_single, use_redis, monitor, counts):
    with use_redis(url=redis_single.url):
        titles()  # stamps created, the connection probed
        querystash.invalidate_models("testapp.Author")  # not a stamp titles() reads
        list(Author.objects.all())  # miss
        with monitor(redis_single.port) as m:
            list(Author.objects.filter(name="Alice"))  # miss: MGET, SET
        skip = [i for i, c in enumerate(m.commands) if c == "CLIENT REPLY SKIP"]
        assert len(skip) == 1, m.commands
        assert m.commands[skip[0] + 1].startswith("SET ") and " EX " in m.commands[skip[0] + 1]
        for _ in range(20):  # the connection stays in step: every read gets its own reply
            assert titles() == ["One", "Two"]
            assert list(Author.objects.filter(name="Alice")) == [data]
        assert counts("testapp.Author")["hits"] == 20


def test_many_tags_are_invalidated_by_one_del(data, redis_single, use_redis, monitor):
    with use_redis(url=redis_single.url):
        titles()
        list(Tag.objects.all())
        with monitor(redis_single.port) as m:
            querystash.invalidate_models("testapp.Book", "testapp.Author", "testapp.Tag")
        assert len(m.commands) == 1, m.commands
        verb, *keys = m.commands[0].split(" ")
        assert verb == "DEL"
        assert {"{qs:t:}testapp_book", "{qs:t:}testapp_author", "{qs:t:}testapp_tag"} <= set(keys)
        assert titles() == ["One", "Two"]  # a miss again, then filled


def test_writes_invalidate(data, redis_single, use_redis, counts):
    with use_redis(url=redis_single.url):
        assert titles() == ["One", "Two"]
        assert titles() == ["One", "Two"]
        Book.objects.filter(title="One").update(title="Uno")
        assert titles() == ["Uno", "Two"]
        Book.objects.create(title="Three", author=data)
        assert titles() == ["Uno", "Two", "Three"]
        assert counts("testapp.Book")["hits"] == 1


def test_every_key_has_a_ttl(data, redis_single, rclient, use_redis):
    with use_redis(url=redis_single.url, dogpile={"lease_ms": 5000, "wait_ms": 0}) as rt:
        for i in range(20):
            list(Book.objects.filter(pk__gte=i))
            Book.objects.filter(pk=i).count()
            list(Author.objects.filter(name=f"x{i}"))
            if i % 5 == 0:
                Book.objects.filter(pk=-1).update(status=2)
        rt.storage.add_many({"qs:t:extra": b"x"}, 60)
    r = rclient(redis_single.port)
    keys = r.keys("*")
    assert len(keys) > 20
    ttls = {k: r.ttl(k) for k in keys}
    assert all(t > 0 for t in ttls.values()), {k: t for k, t in ttls.items() if t <= 0}
    assert max(ttls[k] for k in keys if b":e:" in k and b"lease" not in k) <= 600
    assert max(ttls[k] for k in keys if k.startswith(b"{qs:t:}")) <= 86400


def test_key_prefix_namespaces_every_key(data, redis_single, rclient, use_redis):
    with use_redis(url=redis_single.url, key_prefix="site1:") as rt:
        assert titles() == ["One", "Two"]
        assert titles() == ["One", "Two"]
        assert rt.storage.redis_key("qs:t:x") == "site1:{qs:t:}x"
    keys = rclient(redis_single.port).keys("*")
    assert keys and all(k.startswith(b"site1:") for k in keys), keys


def test_storage_is_usable_directly(redis_single):
    from querystash_redis import RedisStorage, parse

    storage = RedisStorage(parse({"url": redis_single.url}), "qs")
    try:
        assert storage.add_many({"qs:t:a": b"1", "qs:t:b": b"2"}, 60) == set()
        assert storage.add_many({"qs:t:a": b"9", "qs:t:c": b"3"}, 60) == {"qs:t:a"}
        storage.set("qs:1:e:k", b"v", 60)
        assert storage.get_many(["qs:1:e:k", "qs:t:a", "qs:t:zz"]) == [b"v", b"1", None]
        storage.delete_many(["qs:t:a", "qs:t:b", "qs:t:missing"])
        assert storage.get_many(["qs:t:a", "qs:t:b", "qs:t:c"]) == [None, None, b"3"]
        # adds (NX) first, then the read sees them; an existing value is kept
        assert storage.add_get_many({"qs:t:a": b"4", "qs:t:c": b"5"},
                                    ["qs:1:e:k", "qs:t:a", "qs:t:c"], 60) == [b"v", b"4", b"3"]
    finally:
        storage.close()


def test_incr_many_is_incrby_without_ttl(redis_single, monitor, rclient):
    # The site-wide counters (docs/operations.md, "Site-wide stats").
    from querystash_redis import RedisStorage, parse

    storage = RedisStorage(parse({"url": redis_single.url, "key_prefix": "p:"}), "qs")
    try:
        storage.incr_many({"qs:stats:v1:a": 2, "qs:stats:v1:b": 5})
        with monitor(redis_single.port) as m:
            storage.incr_many({"qs:stats:v1:a": 3, "qs:stats:v1:b": 1})
        assert m.commands == ["INCRBY p:qs:stats:v1:a 3", "INCRBY p:qs:stats:v1:b 1"]
        assert storage.get_many(["qs:stats:v1:a", "qs:stats:v1:b", "qs:stats:v1:c"]) == \
            [b"5", b"6", None]
        assert rclient(redis_single.port).ttl("p:qs:stats:v1:a") == -1  # a counter: no TTL
    finally:
        storage.close()


def test_incr_many_from_threads_loses_nothing(redis_single):
    import threading

    from querystash_redis import RedisStorage, parse

    storage = RedisStorage(parse({"url": redis_single.url}), "qs")

    def add():
        for _ in range(50):
            storage.incr_many({"qs:stats:v1:race": 1})

    try:
        threads = [threading.Thread(target=add) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert storage.get_many(["qs:stats:v1:race"]) == [b"200"]
    finally:
        storage.close()
