"""A cold miss: one store read before the query, one fill after it.

A read whose stamps this process has not seen in the store (a tag never used
before, one a write just deleted) creates them in the same round trip as the
read (``Storage.add_get_many``: add = SET NX, then the multi-get), instead of
an ``add_many`` of its own before the query. The stamp protocol still needs
the stamps in the store before the query starts: a write committing between
the read and the fill must make the fill invalid at birth. Real redis and
memcached behind Django's cache backends; store calls counted, not timed.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.conf import settings
from django.test import override_settings

from querystash import _runtime, _stamps
from querystash.testing import rebuild
from querystash.testing import store_calls as recorded
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

@pytest.fixture(params=["redis", "memcached", "locmem"])
def rt(request):
    if request.param == "locmem":
        yield _runtime.current
        # A fresh runtime for the next tests: querystash-fields remembers which
        # scheme slot it chose, and the slots die with the store between tests.
        rebuild()
        return
    alias = request.getfixturevalue(f"{request.param}_cache_alias")
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "django": {"cache": alias}}):
        yield _runtime.current


@contextmanager
def at_fill(action):
    """Run ``action`` once, when a miss is about to fill."""
    done = []

    def checkpoint(name):
        if name == "before_fill" and not done:
            done.append(name)
            action()

    previous, _stamps.checkpoint = _stamps.checkpoint, checkpoint
    try:
        yield done
    finally:
        _stamps.checkpoint = previous


def price(pk):
    # A range: table-level tags whatever plugin is installed (querystash-fields
    # tags equality conditions by value: see the last test).
    return [int(p) for p in Book.objects.cache().filter(pk__gte=pk, pk__lte=pk)
            .values_list("price", flat=True)]


def title(pk):
    return list(Book.objects.cache().filter(pk=pk).values_list("title", flat=True))


def update(pk, value):
    return lambda: Book.objects.filter(pk=pk).update(price=value)


@pytest.fixture
def book():
    return Book.objects.create(title="t", author=Author.objects.create(name="a"), price=10)


def test_cold_miss_with_stamps_in_place_is_one_read_and_one_fill(rt, book):
    price(book.pk)  # the stamps exist and this process has seen them
    other = Book.objects.create(title="u", author=book.author, price=7)
    price(book.pk)  # the write deleted the table's stamp: created again here
    with recorded(rt.storage) as calls:
        assert price(other.pk) == [7]
    assert calls.names == ["get_many", "set"]


def test_miss_after_a_write_creates_its_stamps_in_the_read(rt, book):
    price(book.pk)
    Book.objects.filter(pk=book.pk).update(price=11)  # deletes the stamp this read needs
    with recorded(rt.storage) as calls:
        assert price(book.pk) == [11]
    assert calls.names == ["add_get_many", "set"]  # no add_many before the query
    with recorded(rt.storage) as calls:
        assert price(book.pk) == [11]
    assert calls.names == ["get_many"]  # a hit, on the stamps created above


def test_a_stamp_deleted_elsewhere_is_created_before_the_query(rt, book):
    # Another process's write deletes the stamp: this process still takes it
    # for present, reads, finds it missing, and creates it (acknowledged)
    # before its query, as before.
    assert price(book.pk) == [10]
    assert rt.stamp_prefix + "testapp_book" in rt.store.seen
    rt.storage.delete_many([rt.stamp_prefix + "testapp_book"])
    with recorded(rt.storage) as calls:
        assert price(book.pk) == [10]
    assert calls.names == ["get_many", "add_many", "set"]


def test_a_write_between_the_creating_read_and_the_fill_kills_the_fill(rt, book):
    rt.store.seen.clear()  # every stamp unseen: the read creates them
    rt.storage.delete_many([rt.stamp_prefix + tag for tag in ("testapp_book", "*")])
    with recorded(rt.storage) as calls, at_fill(update(book.pk, 20)) as done:
        assert price(book.pk) == [10]  # queried before the write committed
    assert done and calls.names[0] == "add_get_many"
    assert price(book.pk) == [20]  # the fill was invalid at birth


def test_positive_control_adds_landing_after_the_query_serve_stale_rows(rt, book):
    # The bug the contract forbids: a storage that reports the stamps it was
    # asked to add but puts them in the store only later (after the query).
    # A write committing meanwhile deletes nothing, and the late add makes
    # the old rows' fill valid. The test above must be able to fail: here it does.
    storage = rt.storage
    pending = {}

    def late_add_get_many(mapping, keys, timeout):
        values = storage.get_many(keys)
        pending.update(mapping)
        return [mapping.get(k) if v is None else v for k, v in zip(keys, values, strict=True)]

    def write_then_late_add():
        update(book.pk, 20)()
        storage.add_many(pending, rt.stamp_timeout)

    rt.store.seen.clear()
    rt.storage.delete_many([rt.stamp_prefix + tag for tag in ("testapp_book", "*")])
    storage.add_get_many = late_add_get_many
    try:
        with at_fill(write_then_late_add):
            assert price(book.pk) == [10]
    finally:
        del storage.add_get_many
    assert price(book.pk) == [10]  # stale: the fill survived the write


def test_a_value_never_read_before_creates_its_stamp_in_the_read(rt, book):
    # querystash-fields (installed in this suite) tags ``pk=<value>`` with a
    # stamp of that value: a value never read has none yet.
    if "fields" not in {type(s).__module__.split(".")[0].split("_")[-1] for s in rt.strategies}:
        pytest.skip("querystash-fields is not installed")
    other = Book.objects.create(title="u", author=book.author, price=7)
    assert title(book.pk) == ["t"]  # the scheme's slot is registered
    with recorded(rt.storage) as calls:
        assert title(other.pk) == ["u"]
    assert calls.names == ["add_get_many", "set"]
    with recorded(rt.storage) as calls:
        assert title(other.pk) == ["u"]
    assert calls.names == ["get_many"]
