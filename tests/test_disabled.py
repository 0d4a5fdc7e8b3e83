"""``querystash.disabled()``: no cached read inside, for that thread or task
only; writes inside still invalidate."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext

import querystash
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ann():
    author = Author.objects.create(name="Ann")
    Book.objects.create(title="One", author=author, price=Decimal("1.00"))
    return author


def titles():
    return sorted(Book.objects.values_list("title", flat=True))


def sql_count(read) -> int:
    """Statements ``read()`` sent on this thread's connection."""
    with CaptureQueriesContext(connection) as captured:
        read()
    return len(captured)


def test_reads_inside_go_to_the_database_and_fill_nothing(ann, counts):
    assert sql_count(titles) == 1 and sql_count(titles) == 0  # cached outside
    querystash.invalidate_all()
    with querystash.disabled():
        assert querystash.is_disabled()
        assert [sql_count(titles) for _ in range(3)] == [1, 1, 1]
        assert sql_count(lambda: Book.objects.cache().count()) == 1  # asking does not help
    assert counts("testapp.Book")["fills"] == 1  # the one before the block, none inside
    assert not querystash.is_disabled()
    # nothing was filled inside: the first read after the block is a miss
    assert [sql_count(titles) for _ in range(2)] == [1, 0]


def test_it_covers_code_that_does_not_know_about_it(ann):
    """Third-party code runs plain ORM calls: they are uncached too."""

    def third_party_report():
        return Book.objects.filter(author__name="Ann").count()

    third_party_report()
    assert sql_count(third_party_report) == 0
    with querystash.disabled():
        assert sql_count(third_party_report) == 1


def test_writes_inside_still_invalidate(ann):
    assert titles() == ["One"] and sql_count(titles) == 0  # cached before the block
    with querystash.disabled():
        Book.objects.create(title="Two", author=ann)
        Book.objects.filter(title="One").update(title="Uno")
    assert titles() == ["Two", "Uno"]  # not the entry cached before the block
    with querystash.disabled():
        Book.objects.filter(title="Two").delete()
    assert titles() == ["Uno"]


def test_nesting_restores_the_outer_state(ann):
    with querystash.disabled():
        with querystash.disabled():
            assert querystash.is_disabled()
        assert querystash.is_disabled()
        assert sql_count(titles) == 1 and sql_count(titles) == 1
    assert not querystash.is_disabled()
    assert sql_count(titles) == 1 and sql_count(titles) == 0


def test_an_exception_leaves_caching_on():
    with pytest.raises(ValueError), querystash.disabled():
        raise ValueError("inside")
    assert not querystash.is_disabled()


def test_decorator_on_a_sync_function(ann):
    @querystash.disabled()
    def report():
        """docstring kept"""
        assert querystash.is_disabled()
        return sql_count(titles)

    assert report.__doc__ == "docstring kept"
    assert [report(), report()] == [1, 1]
    assert not querystash.is_disabled()
    assert sql_count(titles) == 1 and sql_count(titles) == 0


def test_other_threads_keep_caching(ann):
    """Two threads inside at the same time: only the one in disabled() is uncached."""
    titles()  # cached
    barrier = threading.Barrier(2, timeout=30)
    seen: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def worker(name: str, off: bool) -> None:
        try:
            if off:
                with querystash.disabled():
                    barrier.wait()  # both threads are now running, one inside
                    seen[name] = [sql_count(titles) for _ in range(2)]
                    barrier.wait()
            else:
                barrier.wait()
                seen[name] = [sql_count(titles) for _ in range(2)]
                barrier.wait()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n, n == "off")) for n in ("off", "on")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert seen == {"off": [1, 1], "on": [0, 0]}
    assert not querystash.is_disabled()


async def _async_reads():
    return [b.title async for b in Book.objects.order_by("title")]


def _async_sql(coroutine_function) -> int:
    """Statements a coroutine sent (the ORM's sync_to_async runs them on this thread)."""
    with CaptureQueriesContext(connection) as captured:
        async_to_sync(coroutine_function)()
    return len(captured)


def test_decorator_on_an_async_function(ann):
    @querystash.disabled()
    async def report():
        assert querystash.is_disabled()
        return await _async_reads()

    async def plain():
        return await _async_reads()

    assert report.__name__ == "report" and asyncio.iscoroutinefunction(report)
    assert [_async_sql(report), _async_sql(report)] == [1, 1]
    assert [_async_sql(plain), _async_sql(plain)] == [1, 0]


def test_asyncio_tasks_each_see_their_own(ann):
    """A task inside disabled() and one outside, interleaved on one loop."""

    async def main():
        inside_started, outside_done = asyncio.Event(), asyncio.Event()
        states = {}

        async def inside():
            with querystash.disabled():
                inside_started.set()
                await outside_done.wait()  # the other task runs while this one is inside
                states["inside"] = querystash.is_disabled()
                return await _async_reads()

        async def outside():
            await inside_started.wait()
            states["outside"] = querystash.is_disabled()
            outside_done.set()
            return await _async_reads()

        with querystash.disabled():
            # a task started inside copies the context: it is disabled too
            child = asyncio.create_task(_child_state())
        states["child"] = await child
        results = await asyncio.gather(inside(), outside())
        return states, results

    states, results = async_to_sync(main)()
    assert states == {"inside": True, "outside": False, "child": True}
    assert results == [["One"], ["One"]]


async def _child_state():
    await asyncio.sleep(0)
    return querystash.is_disabled()


def test_the_switch_is_what_decides(ann, monkeypatch):
    """Positive control: with the read path's check removed (a switch that
    never reports off), disabled() would serve hits, and the test above sees it."""
    from querystash import _reads

    class Never:
        @staticmethod
        def get():
            return False

    titles()
    monkeypatch.setattr(_reads, "_disabled", Never)
    with querystash.disabled():
        assert sql_count(titles) == 0  # the planted bug: a hit inside the block
