"""Optional dog-pile protection: one reader recomputes, the others wait for
its fill (or, after ``wait_ms``, go to the database)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from querystash.testing import checkpoints
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def data():
    alice = Author.objects.create(name="Alice")
    for i in range(3):
        Book.objects.create(title=f"B{i}", author=alice)


def titles():
    return list(Book.objects.order_by("pk").values_list("title", flat=True))


@pytest.fixture
def slow_fills():
    """Every miss takes 0.3 s between its stamp read and its fill."""
    with checkpoints(lambda name: time.sleep(0.3) if name == "after_stamp_read" else None):
        yield


def stampede(n: int = 8) -> list:
    results, barrier = [], threading.Barrier(n)

    def reader():
        try:
            barrier.wait()
            results.append(titles())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=reader) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_off_by_default_every_reader_recomputes(data, redis_single, use_redis, counts, rclient,
                                                slow_fills):
    with use_redis(url=redis_single.url) as rt:
        assert rt.storage.config.dogpile is None
        results = stampede()
    assert results == [["B0", "B1", "B2"]] * 8
    assert counts("testapp.Book")["misses"] == 8
    assert not rclient(redis_single.port).keys("*lease*")


def test_one_reader_recomputes_the_others_wait_for_its_fill(data, redis_single, use_redis,
                                                            counts, rclient, slow_fills):
    with use_redis(url=redis_single.url, dogpile={"lease_ms": 3000, "wait_ms": 3000}) as rt:
        results = stampede()
        leases = rt.storage._leases
    assert results == [["B0", "B1", "B2"]] * 8
    assert counts("testapp.Book")["misses"] == 1
    assert counts("testapp.Book")["hits"] == 7
    assert (leases.taken, leases.waited, leases.timed_out) == (1, 7, 0)
    assert not rclient(redis_single.port).keys("*lease*")  # released by the fill


def test_after_a_write_one_reader_recomputes(data, redis_single, use_redis, counts, slow_fills):
    with use_redis(url=redis_single.url, dogpile={"lease_ms": 3000, "wait_ms": 3000}):
        titles()
        Book.objects.filter(title="B0").update(title="X")  # the hot entry is invalidated
        results = stampede()
    assert results == [["X", "B1", "B2"]] * 8
    assert counts("testapp.Book")["misses"] == 2  # the first fill, and one after the write


def test_waiters_give_up_after_wait_ms_and_use_the_database(data, redis_single, use_redis,
                                                            counts, rclient):
    r = rclient(redis_single.port)
    with use_redis(url=redis_single.url, dogpile={"lease_ms": 5000, "wait_ms": 150}) as rt:
        titles()
        (entry,) = [k for k in r.keys("*") if b":e:" in k]
        r.delete(entry)
        r.set(b"{" + entry + b"}:lease", b"1", px=5000)  # a holder that never fills
        Book.objects.filter(title="B1").update(title="Y")
        started = time.monotonic()
        assert titles() == ["B0", "Y", "B2"]
        assert time.monotonic() - started >= 0.15
        assert rt.storage._leases.timed_out == 1
    assert not r.exists(b"{" + entry + b"}:lease")  # the waiter's own fill released it


def test_wait_ms_zero_goes_straight_to_the_database(data, redis_single, use_redis, rclient):
    r = rclient(redis_single.port)
    with use_redis(url=redis_single.url, dogpile={"lease_ms": 5000, "wait_ms": 0}):
        titles()
        (entry,) = [k for k in r.keys("*") if b":e:" in k]
        r.delete(entry)
        r.set(b"{" + entry + b"}:lease", b"1", px=5000)
        started = time.monotonic()
        assert titles() == ["B0", "B1", "B2"]
        assert time.monotonic() - started < 0.1
