"""Several processes share one database and one redis: no stale read.

The paused-reader test is the stamp protocol's reason to exist: a reader is
stopped between its query and its fill while a writer commits. The fill must
be born invalid. The same scenario with stamps read *after* the query (the
bug) must produce a stale read, or this test could not catch it.
"""

from __future__ import annotations

import multiprocessing

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from tests import race_worker
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def shared_store(redis_cache_alias, redis_server):
    """This process and its children use the throwaway redis as the store."""
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "django": {"cache": "redis"}}):
        yield connection.settings_dict["NAME"], redis_server.url


def cached_price(book_id):
    return list(Book.objects.cache().filter(pk=book_id).values_list("price", flat=True))


def run_paused_race(shared_store, buggy: bool):
    db_name, redis_url = shared_store
    book = Book.objects.create(title="t", author=Author.objects.create(name="a"), price=10)
    paused, go, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    reader = SPAWN.Process(
        target=race_worker.paused_reader,
        args=(db_name, redis_url, book.pk, buggy, paused, go, out),
    )
    reader.start()
    try:
        assert paused.wait(60), "the reader never reached its fill"
        Book.objects.filter(pk=book.pk).update(price=20)  # commits while the reader waits
        go.set()
        assert [str(p) for p in out.get(timeout=60)] == ["10.00"]  # it read before the write
    finally:
        go.set()
        reader.join(60)
    assert reader.exitcode == 0
    return cached_price(book.pk)


def test_a_write_during_a_fill_makes_the_fill_invalid(shared_store):
    assert [str(p) for p in run_paused_race(shared_store, buggy=False)] == ["20.00"]


def test_positive_control_stamps_read_after_the_query_serve_stale_rows(shared_store):
    # The same race with the protocol broken on purpose: the test above must
    # be able to fail, and here it does.
    assert [str(p) for p in run_paused_race(shared_store, buggy=True)] == ["10.00"]


def test_concurrent_readers_and_writers_leave_no_stale_entry(
    shared_store, django_assert_num_queries
):
    db_name, redis_url = shared_store
    author = Author.objects.create(name="a")
    ids = [Book.objects.create(title=f"b{i}", author=author, price=i).pk for i in range(5)]
    out = SPAWN.Queue()
    workers = [
        SPAWN.Process(target=race_worker.mixed_worker,
                      args=(db_name, redis_url, ids, seed, 150, out))
        for seed in range(4)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=240) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    # The run exercised the cache, not just the database.
    assert sum(hits for _, hits in results) > 0
    # Quiescence: every query the workers cached equals the database now.
    for book_id in ids:
        fresh = list(Book.objects.nocache().filter(pk=book_id).values_list("price", "status"))
        assert list(Book.objects.cache().filter(pk=book_id).values_list("price", "status")) == fresh
    for status in (1, 2, 3):
        assert (Book.objects.cache().filter(status=status).count()
                == Book.objects.nocache().filter(status=status).count())
    # And those reads are now served from the cache, still equal.
    with django_assert_num_queries(0):
        for book_id in ids:
            list(Book.objects.cache().filter(pk=book_id).values_list("price", "status"))
