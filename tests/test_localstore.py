"""The built-in in-process store (``_localstore``): deadlines, the size bound,
add-if-absent, threads, and entries no caller can change.

Time is the store's own clock, injected: no test waits or measures."""

from __future__ import annotations

import datetime
import threading
import uuid
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from querystash import _localstore, _runtime
from querystash._localstore import LocalStorage, freeze, thaw
from tests.testapp.models import Book


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(clock):
    return LocalStorage("test", max_entries=4, clock=clock)


# -- deadlines ------------------------------------------------------------------------


def test_a_key_lives_until_its_timeout(store, clock):
    store.set("a", b"1", 10)
    clock.now += 9.999
    assert store.get_many(["a"]) == [b"1"]
    clock.now += 0.001
    assert store.get_many(["a"]) == [None]
    assert "a" not in store.keys()  # dropped when touched


def test_timeout_none_never_expires_and_zero_stores_nothing(store, clock):
    store.set("forever", b"1", None)
    store.set("a", b"old", 10)
    store.set("a", b"new", 0)  # Django's meaning: don't keep it (and drop the old one)
    clock.now += 10**9
    assert store.get_many(["forever", "a"]) == [b"1", None]


def test_each_key_has_its_own_deadline(store, clock):
    store.set("short", b"s", 5)
    store.add_many({"long": b"l"}, 50)
    assert store.deadline("short") == clock.now + 5
    assert store.deadline("long") == clock.now + 50
    clock.now += 6
    assert store.get_many(["short", "long"]) == [None, b"l"]


# -- add-if-absent ----------------------------------------------------------------------


def test_add_many_keeps_what_exists_and_reports_it(store):
    store.set("a", b"first", 60)
    existed = store.add_many({"a": b"second", "b": b"new"}, 60)
    assert existed == {"a"}
    assert store.get_many(["a", "b"]) == [b"first", b"new"]


def test_add_many_replaces_an_expired_key(store, clock):
    store.set("a", b"old", 5)
    clock.now += 5
    assert store.add_many({"a": b"new"}, 60) == set()
    assert store.get_many(["a"]) == [b"new"]


def test_delete_many_ignores_missing_keys(store):
    store.set("a", b"1", 60)
    store.delete_many(["a", "never"])
    assert store.get_many(["a"]) == [None]


# -- the size bound ------------------------------------------------------------------


def test_least_recently_used_key_is_evicted_past_the_bound(store):
    for k in "abcd":
        store.set(k, k.encode(), 60)
    store.get_many(["a"])  # a is used: b is now the least recent
    store.set("e", b"e", 60)
    assert len(store.keys()) == 4
    assert store.get_many(["a", "b", "c", "d", "e"]) == [b"a", None, b"c", b"d", b"e"]


def test_add_many_is_bounded_too(store):
    store.add_many({f"k{i}": b"x" for i in range(10)}, 60)
    assert store.keys() == ["k6", "k7", "k8", "k9"]


@pytest.mark.django_db(transaction=True)
def test_a_store_too_small_for_its_stamps_serves_no_stale_row():
    """A bound of 6 keys: every read evicts stamps and entries of the others.
    Under writes between the reads, every cached read still equals the
    database's answer (eviction only ever makes misses)."""
    from random import Random

    from tests.testapp.models import Author

    tiny = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "querystash-tiny", "OPTIONS": {"MAX_ENTRIES": 6}}
    with override_settings(CACHES={**settings.CACHES, "default": tiny}):
        storage = _runtime.current.storage
        assert storage.max_entries == 6
        ann = Author.objects.create(name="Ann", age=40)
        for i in range(6):
            Book.objects.create(title=f"B{i}", author=ann, status=i % 3)
        rnd = Random(5)
        hits_before = _runtime.current.stats.as_dict().get("testapp.Book", {}).get("hits", 0)
        for _ in range(200):
            status = rnd.randrange(3)
            if rnd.random() < 0.2:
                Book.objects.filter(status=status).update(title=f"t{rnd.randrange(1000)}")
                continue
            cached = sorted(Book.objects.filter(status=status).values_list("pk", "title"))
            fresh = sorted(Book.objects.nocache().filter(status=status).values_list("pk", "title"))
            assert cached == fresh
            assert len(storage.keys()) <= 6
        hits = _runtime.current.stats.as_dict().get("testapp.Book", {}).get("hits", 0)
        assert hits > hits_before  # some reads were served from the store at all


# -- threads ---------------------------------------------------------------------------


def test_threads_share_the_store_safely():
    """Many threads setting, adding, reading and deleting: every value read is
    one that was written under that key, and the bound holds."""
    store = LocalStorage("threads", max_entries=64)
    wrong: list = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        for i in range(2000):
            key = f"k{i % 100}"
            store.set(key, (key, n), 60)
            for k, v in zip([key, f"k{(i + 7) % 100}"],
                            store.get_many([key, f"k{(i + 7) % 100}"]), strict=True):
                if v is not None and v[0] != k:
                    wrong.append((k, v))
            if i % 10 == 0:
                store.delete_many([key])
            store.add_many({f"a{i % 30}": ("a" + str(i % 30), n)}, 60)
            v = store.get_many([f"a{i % 30}"])[0]
            if v is not None and v[0] != f"a{i % 30}":
                wrong.append(v)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert 0 < len(store.keys()) <= 64


def test_add_many_has_one_winner_under_contention():
    store = LocalStorage("contention", max_entries=1000)
    won: list[int] = []
    start = threading.Barrier(16)

    def add(n: int) -> None:
        start.wait()
        if not store.add_many({"stamp": n}, 60):
            won.append(n)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert store.get_many(["stamp"]) == won


# -- entries ---------------------------------------------------------------------------

ROWS = [(1, "a", Decimal("1.50"), None, True, 2.5, b"x", uuid.UUID(int=7),
         datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC), datetime.date(2024, 1, 2),
         datetime.time(3, 4), datetime.timedelta(seconds=5))]


def test_immutable_rows_are_handed_out_without_a_copy_of_the_values():
    entry = freeze("k", [b"s"], ROWS)
    stamps, rows = thaw("k", entry)
    assert stamps == [b"s"] and rows == ROWS
    assert rows is not ROWS and rows is not thaw("k", entry)[1]  # a fresh list each time
    rows.append(("appended",))
    rows.clear()
    assert thaw("k", entry)[1] == ROWS


@pytest.mark.parametrize("mutable", [[1, 2], {"a": 1}, bytearray(b"ab")], ids=type)
def test_rows_holding_mutable_values_are_copied_on_every_read(mutable):
    original = [(1, mutable)]
    entry = freeze("k", [b"s"], original)
    expected = [(1, type(mutable)(mutable))]
    thaw("k", entry)[1][0][1].clear()  # a caller changing what a hit gave it
    assert thaw("k", entry)[1] == expected
    original[0][1].clear()  # the caller's own rows, changed after the fill
    assert thaw("k", entry)[1] == expected


def test_keeping_mutable_rows_as_they_are_would_be_caught():
    """Positive control: the bug ``freeze`` avoids (a list kept by reference)
    is what the test above detects."""
    original = [(1, [1, 2])]
    entry = _localstore.Entry("k", [b"s"], _localstore._ROWS, tuple(original))  # planted bug
    thaw("k", entry)[1][0][1].append(3)
    assert thaw("k", entry)[1] != [(1, [1, 2])]


def test_a_single_row_and_no_row():
    assert thaw("k", freeze("k", [], (1, "x"))) == ([], (1, "x"))
    assert thaw("k", freeze("k", [], None)) == ([], None)
    assert thaw("k", freeze("k", [], [(1, [2])]))[1] == [(1, [2])]


class Text(str):
    pass


def test_a_subclass_of_an_immutable_type_is_not_trusted():
    entry = freeze("k", [], [(Text("a"),)])
    assert entry.kind == _localstore._PICKLED


def test_an_entry_is_refused_under_another_key_or_when_foreign():
    entry = freeze("k", [b"s"], [(1,)])
    assert thaw("other", entry) is None
    assert thaw("k", b"qs1" + b"\0" * 40) is None
    assert thaw("k", None) is None


# -- wiring ----------------------------------------------------------------------------


def test_a_locmem_alias_becomes_the_in_process_store_shared_by_location():
    rt = _runtime.current
    assert isinstance(rt.storage, LocalStorage) and rt.local
    config = dict(settings.CACHES["default"])
    with override_settings(CACHES={**settings.CACHES, "default": {**config, "LOCATION": "x"}}):
        other = _runtime.current.storage
        assert other is not rt.storage and other.location == "x"
        with override_settings(CACHES={**settings.CACHES, "second": {**config, "LOCATION": "x"}}):
            from querystash.default_storage import for_alias

            assert for_alias("second") is other
    assert _runtime.current.storage is rt.storage
    assert rt.storage.max_entries == config["OPTIONS"]["MAX_ENTRIES"]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL arrays")
@pytest.mark.django_db(transaction=True)
def test_a_cached_array_changed_by_the_caller_is_not_what_the_next_hit_serves(
        django_assert_num_queries):
    """psycopg returns an array as a list, inside the cached row: a caller
    that changes it (here the instance's field) must not change the entry."""
    from tests.fieldtypes.models import PgKinds

    config = settings.QUERYSTASH
    with override_settings(QUERYSTASH={
        **config, "MODELS": {**config["MODELS"], "fieldtypes.*": {"ops": "all", "timeout": 600}},
    }):
        pk = PgKinds.objects.create(array=[1, 2]).pk
        assert PgKinds.objects.get(pk=pk).array == [1, 2]
        with django_assert_num_queries(0):
            obj = PgKinds.objects.get(pk=pk)
        obj.array.append(99)
        with django_assert_num_queries(0):
            assert PgKinds.objects.get(pk=pk).array == [1, 2]
        list(PgKinds.objects.filter(pk=pk).values_list("array", flat=True))  # the fill
        with django_assert_num_queries(0):
            rows = list(PgKinds.objects.filter(pk=pk).values_list("array", flat=True))
        rows[0].append(99)
        with django_assert_num_queries(0):
            assert list(PgKinds.objects.filter(pk=pk).values_list("array", flat=True)) == [[1, 2]]
