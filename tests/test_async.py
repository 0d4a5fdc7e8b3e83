"""The async ORM API caches exactly like the sync one.

pytest-asyncio is not used: each test drives its coroutine with
``async_to_sync``, which runs the ORM's thread-sensitive ``sync_to_async``
calls back on the test's own thread, so they use the test's connection (and
``django_assert_num_queries`` sees their SQL).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db.models import Count, Max, Sum
from django.test import override_settings

from querystash import plugins
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)


def run(coroutine_function, *args):
    return async_to_sync(coroutine_function)(*args)


async def fetch_rows(qs):
    return [(b.pk, b.title, b.price, b.status) async for b in qs.order_by("pk")]


async def aget_row(qs, pk):
    b = await qs.aget(pk=pk)
    return (b.pk, b.title, b.price, b.status)


async def acount(qs):
    return await qs.filter(status=1).acount()


async def aexists(qs):
    return await qs.filter(status=2).aexists()


async def aaggregate(qs):
    return await qs.aaggregate(total=Sum("price"), n=Count("pk"), top=Max("status"))


async def avalues(qs):
    return [row async for row in qs.order_by("pk").values_list("title", "price")]


@pytest.fixture
def books():
    ann = Author.objects.create(name="Ann")
    return [
        Book.objects.create(title=f"Book {i}", author=ann, price=Decimal(f"{i}.50"), status=i % 3)
        for i in range(6)
    ]


def read_twice_cached(read, nq, *args):
    """``read(queryset, *args)`` from async code: the database once, then no
    SQL; both equal the result read through ``.nocache()``."""
    expected = run(read, Book.objects.nocache(), *args)
    with nq(1):
        first = run(read, Book.objects.all(), *args)
    with nq(0):
        second = run(read, Book.objects.all(), *args)
    assert first == second == expected
    return expected


def test_async_for_hits_on_repeat(books, counts, django_assert_num_queries):
    rows = read_twice_cached(fetch_rows, django_assert_num_queries)
    assert len(rows) == 6
    assert counts("testapp.Book")["hits"] == 1


def test_aget_hits_on_repeat(books, django_assert_num_queries):
    row = read_twice_cached(aget_row, django_assert_num_queries, books[2].pk)
    assert row[1] == "Book 2"


def test_acount_hits_on_repeat(books, django_assert_num_queries):
    assert read_twice_cached(acount, django_assert_num_queries) == 2


def test_aexists_hits_on_repeat(books, django_assert_num_queries):
    assert read_twice_cached(aexists, django_assert_num_queries) is True


def test_aaggregate_hits_on_repeat(books, django_assert_num_queries):
    result = read_twice_cached(aaggregate, django_assert_num_queries)
    assert result == {"total": Decimal("18.00"), "n": 6, "top": 2}


def test_async_values_list_hits_on_repeat(books, django_assert_num_queries):
    read_twice_cached(avalues, django_assert_num_queries)


def test_sync_fill_serves_async_read(books, django_assert_num_queries):
    expected = Book.objects.filter(status=1).count()  # filled from sync code
    with django_assert_num_queries(0):
        assert run(acount, Book.objects.all()) == expected


def test_async_fill_serves_sync_read(books, django_assert_num_queries):
    expected = run(acount, Book.objects.all())  # filled from async code
    with django_assert_num_queries(0):
        assert Book.objects.filter(status=1).count() == expected


async def _asave(books):
    book = await Book.objects.aget(pk=books[0].pk)
    book.title, book.price, book.status = "Saved", Decimal("9.99"), 2
    await book.asave()


async def _aupdate(books):
    await Book.objects.filter(status=0).aupdate(status=2, price=Decimal("1.00"))


async def _adelete(books):
    await Book.objects.filter(status=2).adelete()


async def _acreate(books):
    await Book.objects.acreate(title="New", author_id=books[0].author_id, status=2)


async def _abulk_create(books):
    await Book.objects.abulk_create(
        [Book(title=f"Bulk {i}", author_id=books[0].author_id, status=2) for i in range(2)]
    )


async def _ainstance_delete(books):
    book = await Book.objects.aget(pk=books[2].pk)
    await book.adelete()


def _sync_update(books):
    Book.objects.filter(pk=books[1].pk).update(status=2, title="Sync", price=Decimal("7.77"))


async def _async_wrapper_of_sync_update(books):
    # a sync write run from async code
    await sync_to_async(_sync_update)(books)


ASYNC_WRITES = [
    _asave,
    _aupdate,
    _adelete,
    _acreate,
    _abulk_create,
    _ainstance_delete,
    _async_wrapper_of_sync_update,
]
READS = [fetch_rows, acount, aexists, aaggregate, avalues]


@pytest.mark.parametrize("write", ASYNC_WRITES)
@pytest.mark.parametrize("read", READS)
def test_fresh_after_async_write(books, read, write, django_assert_num_queries):
    # Every async write path reaches the core's invalidation: at table level,
    # it makes the next read a miss. Installed invalidation plugins are off
    # here (a field-scoped one rightly keeps a read the write can't change).
    installed = [
        plugins.pm.get_name(impl.plugin)
        for impl in plugins.pm.hook.querystash_invalidation_strategy.get_hookimpls()
        if impl.plugin_name in plugins.versions
    ]
    disabled = [*settings.QUERYSTASH.get("DISABLED_PLUGINS", ()), *installed]
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "DISABLED_PLUGINS": disabled}):
        read_twice_cached(read, django_assert_num_queries)
        run(write, books)
        with django_assert_num_queries(1):
            after = run(read, Book.objects.all())
        assert after == run(read, Book.objects.nocache())
        with django_assert_num_queries(0):
            assert run(read, Book.objects.all()) == after


@pytest.mark.parametrize("read", READS)
def test_fresh_after_sync_write(books, read, django_assert_num_queries):
    before = read_twice_cached(read, django_assert_num_queries)
    _sync_update(books)
    with django_assert_num_queries(1):
        after = run(read, Book.objects.all())
    assert after == run(read, Book.objects.nocache())
    assert after != before or read is aexists  # status=2 rows existed before too
    with django_assert_num_queries(0):
        assert run(read, Book.objects.all()) == after


def test_aget_fresh_after_asave(books, django_assert_num_queries):
    pk = books[4].pk
    read_twice_cached(aget_row, django_assert_num_queries, pk)
    run(_asave_by_pk, pk)
    with django_assert_num_queries(1):
        row = run(aget_row, Book.objects.all(), pk)
    assert row == run(aget_row, Book.objects.nocache(), pk)
    assert row[1] == "Renamed"


async def _asave_by_pk(pk):
    book = await Book.objects.nocache().aget(pk=pk)
    book.title = "Renamed"
    await book.asave()


def test_nocache_from_async_code(books, counts, django_assert_num_queries):
    for _ in range(3):
        with django_assert_num_queries(1):
            assert run(acount, Book.objects.nocache()) == 2
    assert counts("testapp.Book").get("misses", 0) == 0


async def aiterate(qs):
    return [(b.pk, b.title) async for b in qs.order_by("pk").aiterator()]


def test_aiterator_cached_only_with_cache(books, django_assert_num_queries):
    expected = [(b.pk, b.title) for b in books]
    for _ in range(2):  # iterator is not among the ops "all" implies
        with django_assert_num_queries(1):
            assert run(aiterate, Book.objects.all()) == expected
    with django_assert_num_queries(1):
        assert run(aiterate, Book.objects.cache()) == expected
    with django_assert_num_queries(0):
        assert run(aiterate, Book.objects.cache()) == expected
