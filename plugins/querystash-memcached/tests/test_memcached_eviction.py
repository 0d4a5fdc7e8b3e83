"""Fail closed under eviction. memcached drops keys under memory pressure
(django-cachebot's README warned that this broke its invalidation); with the
stamp protocol a dropped stamp is a miss, never a stale hit."""

from __future__ import annotations

import random

import pytest
from django.db import connection
from pymemcache.client.base import Client

from querystash.testing import counters
from querystash.testing.servers import MemcachedServer
from tests.testapp.models import Author, Blob, Book

from .conftest import cached, need_memcached, truth, using

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def tiny():
    """memcached with 2 MB: the smallest it accepts with its 1 MB item limit.

    Plain LRU (``no_lru_maintainer``): with the segmented LRU, a stamp read a few
    times is "active" and kept in the WARM segment, which a flood of items
    nobody reads may never reach: the flood would not evict it."""
    need_memcached()
    with MemcachedServer(memory_mb=2, extra_args=["-o", "no_lru_maintainer"]) as server:
        yield server


@pytest.fixture
def many_books():
    authors = [Author.objects.create(name=f"Author {i}") for i in range(5)]
    for i in range(40):
        Book.objects.create(title=f"{i:03d} " + "long title " * 13, author=authors[i % 5])


def entry_keys(monkeypatch, rt) -> list[str]:
    keys: list[str] = []
    original = rt.storage.set

    def recording_set(key, value, timeout):
        keys.append(key)
        return original(key, value, timeout)

    monkeypatch.setattr(rt.storage, "set", recording_set)
    return keys


def on_server(rt, key: str):
    storage = rt.storage
    return storage.server_for(key).run(Client.get, storage.key(key))


def flood_until_gone(server, rt, stamp: str, batches: int = 400) -> int:
    """Another tenant of the same memcached writes items of a stamp's size
    until ``stamp`` has been evicted. Returns the server's eviction count.

    Looking is a read, which bumps the stamp in memcached's LRU: look rarely."""
    client = Client(server.address, connect_timeout=2, timeout=5)
    name = rt.storage.key(stamp)
    filler = "f" * (len(name) - 12)
    try:
        for batch in range(batches):
            client.set_many({f"{filler}{batch:05d}{i:07d}": b"z" * 8 for i in range(1000)},
                            noreply=True)
            if batch % 100 == 99 and client.get(name) is None:
                return int(client.stats()[b"evictions"])
    finally:
        client.close()
    raise AssertionError(f"{stamp} was never evicted")


def change_below_querystash(title: str) -> None:
    """Change a row where querystash cannot see it (the raw DB-API cursor), so
    only the stamp stands between the old entry and a stale read."""
    cursor = connection.connection.cursor()  # sqlite3's cursor is no context manager
    try:
        cursor.execute(f"UPDATE testapp_book SET title = '{title}'")
    finally:
        cursor.close()
    connection.connection.commit()


def test_an_evicted_stamp_is_a_miss_never_a_stale_hit(
    tiny, many_books, counts, monkeypatch
):
    with using([tiny.url]) as rt:
        keys = entry_keys(monkeypatch, rt)
        old = cached()
        assert cached() == old and counts("testapp.Book")["hits"] == 1
        entry, stamp = keys[0], rt.stamp_key("testapp_book")
        change_below_querystash("changed")  # the entry is now wrong, and still valid
        assert cached() == old  # as documented: writes below Django are not seen

        assert flood_until_gone(tiny, rt, stamp) > 0
        assert on_server(rt, entry) is not None, "the entry itself must survive"
        assert on_server(rt, stamp) is None

        hits, misses = counts("testapp.Book")["hits"], counts("testapp.Book")["misses"]
        assert cached() == truth() != old  # a miss: the stamp is gone
        assert counts("testapp.Book")["misses"] == misses + 1
        assert counts("testapp.Book")["hits"] == hits
        assert cached() == truth()  # refilled under a new stamp, then a hit
        assert counts("testapp.Book")["hits"] == hits + 1


def test_a_write_after_its_stamp_was_evicted_still_invalidates(
    tiny, many_books, counts, monkeypatch
):
    """cachebot's failure: the invalidation data is evicted, then a write
    cannot find what to invalidate. Here the write needs nothing stored."""
    with using([tiny.url]) as rt:
        keys = entry_keys(monkeypatch, rt)
        old = cached()
        entry, stamp = keys[0], rt.stamp_key("testapp_book")
        flood_until_gone(tiny, rt, stamp)
        assert on_server(rt, entry) is not None
        Book.objects.filter(pk=Book.objects.nocache().first().pk).update(title="written")
        assert cached() == truth() != old


def test_tiny_memory_under_read_write_load_never_reads_stale(tiny):
    rng = random.Random(5)
    authors = [Author.objects.create(name=f"A{i}") for i in range(20)]
    book_ids = [Book.objects.create(title=f"{i} " + "t" * 150, author=authors[i % 20],
                                    status=i % 4).pk for i in range(120)]
    blob_ids = [Blob.objects.create(data=rng.randbytes(40_000)).pk for i in range(60)]

    def reads(nocache: bool):
        def q(model):
            return model.objects.nocache() if nocache else model.objects

        kind = rng.randrange(6)
        if kind == 0:
            pk = rng.choice(blob_ids)
            return lambda: bytes(q(Blob).get(pk=pk).data)
        if kind == 1:
            author = rng.choice(authors).pk
            return lambda: list(q(Book).filter(author_id=author).order_by("pk")
                                .values_list("pk", "title", "status"))
        if kind == 2:
            pk = rng.choice(book_ids)
            return lambda: list(q(Book).filter(pk=pk).values_list("title", "status"))
        if kind == 3:
            status = rng.randrange(4)
            return lambda: q(Book).filter(status=status).count()
        if kind == 4:
            n = rng.randrange(1, 30)
            return lambda: list(q(Book).order_by("pk").values_list("pk", "title")[:n])
        return lambda: list(q(Author).order_by("pk").values_list("pk", "name"))

    def write():
        kind = rng.randrange(5)
        if kind == 0:
            Book.objects.filter(pk=rng.choice(book_ids)).update(
                title=f"w{rng.random()}", status=rng.randrange(4))
        elif kind == 1:
            Blob.objects.filter(pk=rng.choice(blob_ids)).update(data=rng.randbytes(40_000))
        elif kind == 2:
            book_ids.append(Book.objects.create(title="new", author=rng.choice(authors)).pk)
        elif kind == 3 and len(book_ids) > 60:
            Book.objects.filter(pk=book_ids.pop(rng.randrange(len(book_ids)))).delete()
        else:
            Author.objects.filter(pk=rng.choice(authors).pk).update(name=f"A{rng.random()}")

    stale = []
    tenant = Client(tiny.address, connect_timeout=2, timeout=5)
    with using([tiny.url]) as rt:
        for step in range(1200):
            if rng.random() < 0.15:
                write()
                continue
            if step % 100 == 0:  # another tenant's small items push stamps out too
                tenant.set_many({f"tenant:{step:05d}:{i:07d}": b"z" * 8 for i in range(3000)},
                                noreply=True)
            seed = rng.random()
            rng.seed(seed)
            got = reads(nocache=False)()
            rng.seed(seed)
            expected = reads(nocache=True)()
            if got != expected:
                stale.append(step)
        stats = rt.storage.stats()
        totals = counters()
    tenant.close()
    assert stale == []
    assert stats["evictions"] > 0, stats  # the load really ran out of memory
    assert totals["hits"] > 100 and totals["misses"] > 100, totals
