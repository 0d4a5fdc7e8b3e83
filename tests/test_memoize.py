"""``querystash.memoize``: a memoized result is served only while nothing it
read has changed.

Every test compares with the same function run with querystash switched off
(``truth``), and checks that the write it makes changed that truth (or the
test could pass by serving the old result). Stores: the built-in locmem,
redis and memcached (real servers); databases: whichever the suite runs on.
Two read modes: the models cached per query too ("per-query"), and not at
all ("memo-only": every read goes through the capture's own stamp read).
"""

from __future__ import annotations

import functools
import os
import pickle
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

import querystash
from querystash import _capture, _memo_entry, _memoize, _runtime, _stamps
from querystash.testing import wait_for_store
from tests.helpers import in_thread
from tests.testapp.models import Author, Book, Review, Tag

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRES = connection.vendor == "postgresql"


# -- the memoized code -----------------------------------------------------------------


def _library(min_status):
    books = list(Book.objects.filter(status__gte=min_status).select_related("author")
                 .prefetch_related("tags").order_by("pk"))
    return {
        "books": [(b.pk, b.title, b.status, str(b.price), b.author.name,
                   sorted(t.name for t in b.tags.all())) for b in books],
        "reviews": list(Review.objects.order_by("pk").values_list("book_id", "score")),
        "authors": Author.objects.count(),
        "tags": list(Tag.objects.order_by("name").values_list("name", flat=True)),
    }


library = querystash.memoize(_library)
LABEL = library.querystash_memoized


@querystash.memoize
def titles_of(author_id):
    return list(Book.objects.filter(author_id=author_id).order_by("pk")
                .values_list("title", flat=True))


@querystash.memoize
def shelf(author_id):
    """Calls another memoized function and reads a table of its own."""
    return {"titles": titles_of(author_id), "name": Author.objects.get(pk=author_id).name}


def truth(fn, *args):
    """``fn`` unmemoized, with querystash off: what the database says."""
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "ENABLED": False}):
        return fn.__wrapped__(*args)


def stats(label=LABEL):
    return querystash.memoize_stats().get(label, {})


def key_of(rt, fn) -> str:
    """The entry key of ``fn()`` (a memoized function called with no argument)."""
    code = _memoize.encode(_memoize.fingerprint(fn.__wrapped__)).decode()
    return _memoize._key(rt, fn.querystash_memoized, _memoize._Arguments(code, (), {}))


def calls_db(fn, *args):
    """(result, SQL statements run)."""
    with CaptureQueriesContext(connection) as ctx:
        result = fn(*args)
    return result, len(ctx.captured_queries)


def assert_hit(fn, *args, label=None):
    label = label or fn.querystash_memoized
    hits = stats(label).get("hits", 0)
    result, queries = calls_db(fn, *args)
    assert stats(label).get("hits", 0) == hits + 1, stats(label)
    assert queries == 0
    return result


def prime(fn, *args):
    first = fn(*args)
    assert stats(fn.querystash_memoized).get("fills", 0) >= 1, stats(fn.querystash_memoized)
    assert assert_hit(fn, *args) == first
    return first


# -- set-ups -----------------------------------------------------------------------------


@contextmanager
def configured(alias: str, mode: str):
    value = {**settings.QUERYSTASH, "django": {"cache": alias}}
    if mode == "memo-only":
        value["MODELS"] = {}
    with override_settings(QUERYSTASH=value):
        rt = _runtime.current
        assert rt.enabled and rt.storage.alias == alias
        yield rt


@pytest.fixture(params=["locmem", "redis", "memcached"])
def alias(request):
    if request.param == "locmem":
        return "default"
    return request.getfixturevalue(f"{request.param}_cache_alias")


@pytest.fixture(params=["per-query", "memo-only"])
def mode(request):
    return request.param


@pytest.fixture
def setup(alias, mode):
    with configured(alias, mode) as rt:
        yield rt


@pytest.fixture
def locmem(mode):
    with configured("default", mode) as rt:
        yield rt


@pytest.fixture
def data():
    alice = Author.objects.create(name="Alice", age=35)
    bob = Author.objects.create(name="Bob", age=50)
    one = Book.objects.create(title="One", author=alice, price=10)
    two = Book.objects.create(title="Two", author=alice, price=20, status=2)
    three = Book.objects.create(title="Three", author=bob, price=30)
    red, blue = Tag.objects.create(name="red"), Tag.objects.create(name="blue")
    one.tags.add(red)
    two.tags.add(red, blue)
    Review.objects.create(book=one, score=4)
    Review.objects.create(book=two, score=2)
    return {"alice": alice, "bob": bob, "one": one, "two": two, "three": three,
            "red": red, "blue": blue}


# -- every write path ----------------------------------------------------------------------


def _raw_write(d):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE testapp_book SET title = %s WHERE id = %s", ["Raw", d["one"].pk])


def _save(d):
    book = Book.objects.get(pk=d["one"].pk)
    book.title = "Saved"
    book.save()


WRITES = {
    "save": _save,
    "create": lambda d: Book.objects.create(title="Four", author=d["bob"]),
    "update": lambda d: Book.objects.filter(pk=d["two"].pk).update(status=5),
    "delete": lambda d: d["three"].delete(),
    "bulk_create": lambda d: Book.objects.bulk_create(
        [Book(title=f"B{i}", author=d["bob"]) for i in range(2)]),
    "bulk_update": lambda d: Book.objects.bulk_update(
        [Book(pk=d["one"].pk, title="BU1", author=d["alice"]),
         Book(pk=d["two"].pk, title="BU2", author=d["alice"])], ["title"]),
    "m2m_add": lambda d: d["three"].tags.add(d["blue"]),
    "m2m_remove": lambda d: d["two"].tags.remove(d["red"]),
    "m2m_clear": lambda d: d["two"].tags.clear(),
    "raw_cursor": _raw_write,
    "update_with_F": lambda d: Book.objects.update(price=F("price") + 1),
    "cascade_delete": lambda d: d["alice"].delete(),
    "related_rename": lambda d: Tag.objects.filter(pk=d["red"].pk).update(name="crimson"),
    "review_create": lambda d: Review.objects.create(book=d["three"], score=5),
    "author_save": lambda d: Author.objects.filter(pk=d["bob"].pk).update(name="Robert"),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_every_write_path_invalidates_the_memoized_result(setup, data, write):
    old = prime(library, 1)
    assert old == truth(library, 1)
    WRITES[write](data)
    new = truth(library, 1)
    assert new != old, "the write must change what the function returns"
    assert library(1) == new
    assert stats().get("misses") == 2
    assert assert_hit(library, 1) == new  # filled again


# -- the race: a write between the stamp read and the fill ---------------------------------


@contextmanager
def write_at(point: str, write):
    """Run ``write`` (committed, on another connection) once, when the miss
    path reaches ``point``."""
    fired = []
    previous = _stamps.checkpoint

    def checkpoint(name):
        if name == point and not fired:
            fired.append(name)
            in_thread(write)
        if previous is not None:
            previous(name)

    _stamps.checkpoint = checkpoint
    try:
        yield fired
    finally:
        _stamps.checkpoint = previous


def planted_stamps_after_the_query(monkeypatch):
    """The bug the protocol prevents (positive control only): the memo
    records its stamps as they are at fill time, after the queries ran."""
    complete = _memoize._complete

    def late(rt, key, label, counts, capture, value, timeout):
        checkpoint, _stamps.checkpoint = _stamps.checkpoint, None
        try:
            if checkpoint is not None:
                checkpoint("memo_before_fill")
            tags = list(capture.stamps)
            keys = [rt.stamp_prefix + t for t in tags]
            fresh = list(rt.storage.get_many(keys))
            _stamps._ensure_stamps(rt, tags, keys, fresh)
            capture.stamps = dict(zip(tags, fresh, strict=True))
            complete(rt, key, label, counts, capture, value, timeout)
        finally:
            _stamps.checkpoint = checkpoint

    monkeypatch.setattr(_memoize, "_complete", late)


def run_race(data, point, seeded=False):
    """Miss, with a write committing at ``point``; then what the next call
    serves. ``seeded``: the label's tables are known (another argument was
    filled first), so the probe's stamps stand for the call's queries."""
    if seeded:
        library(2)

    def write():
        Book.objects.filter(pk=data["one"].pk).update(title="Late")

    with write_at(point, write) as fired:
        during = library(1)
    assert fired == [point]
    if point == "memo_before_fill":  # every query ran before the write
        assert "Late" not in [b[1] for b in during["books"]]
    else:  # the write landed after the stamps were read, before the queries
        assert "Late" in [b[1] for b in during["books"]]
    return library(1)


#: the miss path's points after its stamps were read: after the probe (whose
#: stamps seed the capture), after a query's own stamp read, before the fill
RACE_POINTS = ["memo_after_probe", "capture_after_stamp_read", "memo_before_fill"]


@pytest.mark.parametrize("point", RACE_POINTS)
def test_a_write_between_the_stamp_read_and_the_fill_kills_the_entry_at_birth(
        alias, data, point):
    with configured(alias, "per-query"):
        after = run_race(data, point, seeded=point == "memo_after_probe")
        assert after == truth(library, 1)
        assert "Late" in [b[1] for b in after["books"]]


def test_a_write_at_the_fill_in_memo_only_mode(data):
    with configured("default", "memo-only"):
        after = run_race(data, "memo_before_fill")
        assert "Late" in [b[1] for b in after["books"]]


@pytest.mark.parametrize("seeded", [False, True], ids=["unseeded", "seeded"])
def test_positive_control_stamps_recorded_after_the_query_serve_stale(
        data, monkeypatch, seeded):
    planted_stamps_after_the_query(monkeypatch)
    with configured("default", "per-query"):
        after = run_race(data, "memo_before_fill", seeded=seeded)
        assert "Late" not in [b[1] for b in after["books"]]  # stale: the bug is caught
        assert after != truth(library, 1)


# -- transactions ------------------------------------------------------------------------


def test_commit(locmem, data):
    old = prime(library, 1)
    with transaction.atomic():
        Book.objects.filter(pk=data["one"].pk).update(title="Tx")
        inside = library(1)  # read-your-writes
        assert "Tx" in [b[1] for b in inside["books"]]
    assert inside != old
    assert library(1) == truth(library, 1) == inside


def refilled_by_another_connection_during_a_write(data):
    """A transaction writes; another connection, which cannot see the write,
    fills the entry again; what does the writing transaction read?"""
    prime(library, 1)
    with transaction.atomic():
        Book.objects.filter(pk=data["one"].pk).update(title="Mine")
        outside = in_thread(lambda: library(1))
        assert "Mine" not in [b[1] for b in outside["books"]]
        assert stats().get("fills") == 2  # a valid entry, for everyone else
        return library(1)


def test_read_your_writes_inside_a_transaction_on_a_hit(locmem, data):
    inside = refilled_by_another_connection_during_a_write(data)
    assert "Mine" in [b[1] for b in inside["books"]]


def test_positive_control_without_the_written_tags_check(locmem, data, monkeypatch):
    monkeypatch.setattr(_memoize, "_wrote_any", lambda tags: False)
    inside = refilled_by_another_connection_during_a_write(data)
    assert "Mine" not in [b[1] for b in inside["books"]]  # its own write unseen: caught


def test_rollback(locmem, data):
    old = prime(library, 1)
    with pytest.raises(RuntimeError), transaction.atomic():
        Book.objects.filter(pk=data["one"].pk).update(title="Tx")
        assert "Tx" in [b[1] for b in library(1)["books"]]
        raise RuntimeError("roll back")
    assert library(1) == truth(library, 1) == old


def test_savepoint_rollback(locmem, data):
    old = prime(library, 1)
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():
            Book.objects.filter(pk=data["one"].pk).update(title="Sp")
            assert "Sp" in [b[1] for b in library(1)["books"]]
            raise RuntimeError("roll back the savepoint")
        assert library(1) == old
    assert library(1) == truth(library, 1) == old


def test_a_write_committed_by_another_connection_during_a_transaction(locmem, data):
    prime(library, 1)
    with transaction.atomic():
        in_thread(lambda: Book.objects.filter(pk=data["one"].pk).update(title="Other"))
        library(1)
    assert library(1) == truth(library, 1)
    assert "Other" in [b[1] for b in library(1)["books"]]


def test_fills_inside_a_transaction_only_where_statements_see_committed_data(locmem, data):
    with transaction.atomic():
        library(1)
    if POSTGRES:  # READ COMMITTED
        assert stats().get("fills") == 1
    else:
        assert stats().get(_memoize.VETO + _capture.SNAPSHOT) == 1
        assert "fills" not in stats()


# -- nested memoized calls -------------------------------------------------------------------


@pytest.mark.parametrize("inner_first", [True, False], ids=["inner-hit", "inner-miss"])
def test_a_memoized_function_calling_another(locmem, data, inner_first):
    alice = data["alice"].pk
    if inner_first:
        prime(titles_of, alice)
    first = prime(shelf, alice)
    assert first == truth(shelf, alice) == {"titles": ["One", "Two"], "name": "Alice"}
    # Only the inner function reads books: the outer depends on them through it.
    Book.objects.filter(pk=data["two"].pk).update(title="Deux")
    assert shelf(alice) == truth(shelf, alice) == {"titles": ["One", "Deux"], "name": "Alice"}
    Author.objects.filter(pk=alice).update(name="Alicia")
    assert shelf(alice)["name"] == "Alicia"


@querystash.memoize
def raw_count():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM testapp_book")
        return cursor.fetchone()[0]


@querystash.memoize
def outer_of_raw():
    return [raw_count(), Author.objects.count()]


def test_a_veto_inside_a_nested_call_vetoes_the_outer_one(locmem, data):
    assert outer_of_raw() == [3, 2]
    assert stats(outer_of_raw.querystash_memoized).get(
        _memoize.VETO + _capture.RAW_READ) == 1
    assert stats(raw_count.querystash_memoized).get(_memoize.VETO + _capture.RAW_READ) == 1
    Book.objects.create(title="Four", author=data["bob"])
    assert outer_of_raw() == [4, 2]


# -- vetoes, each with its reason ------------------------------------------------------------


def _raw_manager():
    return [b.title for b in Book.objects.raw("SELECT * FROM testapp_book ORDER BY id")]


def _write_inside():
    Tag.objects.create(name=f"made-{Tag.objects.count()}")
    return Tag.objects.count()


def _select_for_update():
    with transaction.atomic():
        return [b.title for b in Book.objects.select_for_update().order_by("pk")]


def _volatile():
    rows = Book.objects.annotate(t=Now()).order_by("pk").values_list("title", "t")
    return [title for title, _ in rows]


def _unwatched():
    return Book.objects.extra(where=["EXISTS (SELECT 1 FROM memo_unwatched)"]).count()


def _nocache():
    return Book.objects.nocache().count()


def _raw_cursor():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM testapp_book")
        return cursor.fetchone()[0]


VETOES = {
    "raw_cursor": (_raw_cursor, _capture.RAW_READ),
    "raw_manager": (_raw_manager, _capture.RAW_READ),
    "write": (_write_inside, _capture.WRITE),
    "select_for_update": (_select_for_update, _capture.INELIGIBLE),
    "volatile": (_volatile, _capture.INELIGIBLE),
    "unwatched": (_unwatched, _capture.UNWATCHED),
    "nocache": (_nocache, _capture.NOCACHE),
}


@pytest.fixture
def unwatched_table():
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE memo_unwatched (id integer)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE memo_unwatched")


@pytest.mark.parametrize("case", list(VETOES))
def test_what_the_capture_cannot_track_vetoes_the_fill(locmem, data, unwatched_table, case):
    fn, reason = VETOES[case]
    memoized = querystash.memoize(fn, name=f"veto.{case}")
    for _ in range(2):
        result = memoized()
        if case != "write":
            assert result == fn()
    counts = stats(f"veto.{case}")
    assert counts.get(_memoize.VETO + reason) == 2, counts
    assert "fills" not in counts and "hits" not in counts


def test_a_query_in_a_transaction_that_cannot_fill_vetoes(locmem, data):
    with transaction.atomic():
        if POSTGRES:  # a snapshot for the whole transaction
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            wrapper = connections[DEFAULT_DB_ALIAS]
            level, wrapper.isolation_level = wrapper.isolation_level, \
                SimpleNamespace(name="REPEATABLE_READ")
        try:
            assert library(1) == truth(library, 1)
        finally:
            if POSTGRES:
                wrapper.isolation_level = level
    assert stats().get(_memoize.VETO + _capture.SNAPSHOT) == 1
    assert "fills" not in stats()


def test_reading_what_the_open_transaction_wrote_vetoes(locmem, data):
    prime(library, 1)
    with transaction.atomic():
        Book.objects.filter(pk=data["one"].pk).update(title="Mine")
        result = library(1)
    assert "Mine" in [b[1] for b in result["books"]]
    assert stats().get(_memoize.VETO + _capture.READ_YOUR_WRITES) == 1


@querystash.memoize
def book_count(option):
    return Book.objects.count()


def test_an_unencodable_argument_runs_uncached(locmem, data):
    class Opaque:
        pass

    assert book_count(Opaque()) == 3
    assert book_count(Opaque()) == 3
    counts = stats(book_count.querystash_memoized)
    reasons = [k for k in counts if k.startswith(_memoize.VETO + "unencodable argument")]
    assert len(reasons) == 1 and counts[reasons[0]] == 2, counts
    assert "Opaque" in reasons[0]
    # ...and its queries still count for a memoized caller: not vetoed by it
    caller = querystash.memoize(lambda: book_count(Opaque()), name="caller")
    assert caller() == 3
    assert stats("caller").get("fills") == 1
    Book.objects.create(title="Four", author=data["bob"])
    assert caller() == 4


@querystash.memoize
def unpicklable():
    count = Book.objects.count()
    return lambda: count


def test_an_unpicklable_result_is_not_filled(locmem, data):
    assert unpicklable()() == 3
    assert unpicklable()() == 3
    counts = stats(unpicklable.querystash_memoized)
    assert counts.get("unpicklable") == 2 and "fills" not in counts


@querystash.memoize
def counted_twice():
    first = Book.objects.count()
    _between()
    return first, Book.objects.filter(status__gte=0).count()


def _between():  # replaced by the test
    pass


def test_a_write_between_two_queries_of_the_call_vetoes(locmem, data, monkeypatch):
    monkeypatch.setattr(
        "tests.test_memoize._between",
        lambda: in_thread(lambda: Book.objects.create(title="X", author_id=data["bob"].pk)))
    assert counted_twice() == (3, 4)
    # The second query reused the stamp read before the first, which the
    # write deleted: the entry filled is dead at birth, never served.
    monkeypatch.setattr("tests.test_memoize._between", lambda: None)
    assert counted_twice() == (4, 4)
    assert stats(counted_twice.querystash_memoized).get("misses") == 2


def test_store_outage_never_fails_the_call(redis_cache_alias, redis_server, data):
    with configured(redis_cache_alias, "per-query"):
        prime(library, 1)
        redis_server.stop()
        try:
            Book.objects.filter(pk=data["one"].pk).update(title="Down")
            result = library(1)
            assert result == truth(library, 1)
            assert "Down" in [b[1] for b in result["books"]]
            assert stats().get("fills") == 1  # no fill while the store is out
        finally:
            redis_server.start()
        assert wait_for_store(), "the outage's debt was never paid"
        assert library(1) == truth(library, 1)
        assert stats().get("fills") == 2  # the store is used again


def test_a_lazy_queryset_result_is_captured_when_pickled(locmem, data):
    lazy = querystash.memoize(lambda: Book.objects.filter(status=1).order_by("pk"),
                              name="lazy")
    assert [b.title for b in lazy()] == ["One", "Three"]
    assert [b.title for b in assert_hit(lazy, label="lazy")] == ["One", "Three"]
    Book.objects.filter(pk=data["two"].pk).update(status=1)
    assert [b.title for b in lazy()] == ["One", "Two", "Three"]


def test_a_function_that_runs_no_query_depends_on_the_global_stamp(locmem):
    calls = []
    pure = querystash.memoize(lambda x: calls.append(x) or x * 2, name="pure")
    assert pure(2) == 4 and pure(2) == 4 and calls == [2]
    querystash.invalidate_all()
    assert pure(2) == 4 and calls == [2, 2]


def test_arguments_vary_the_key(locmem, data):
    assert titles_of(data["alice"].pk) == ["One", "Two"]
    assert titles_of(data["bob"].pk) == ["Three"]
    assert titles_of(author_id=data["bob"].pk) == ["Three"]
    assert library(1) != library(2)


def _titles_by(author_id):
    """A function defined inside another, over a variable of it: a new one
    per call, all with one qualified name."""
    def titles():
        return list(Book.objects.filter(author_id=author_id).order_by("pk")
                    .values_list("title", flat=True))
    return titles


def test_a_function_its_qualified_name_does_not_identify_needs_a_name(locmem, data):
    for fn in (lambda: Book.objects.count(), _titles_by(data["alice"].pk)):
        with pytest.raises(TypeError, match="give it a name= that differs wherever"):
            querystash.memoize(fn)
        with pytest.raises(TypeError, match="lambda or a function defined inside another"):
            querystash.memoize(timeout=60)(fn)
    with pytest.raises(TypeError, match="no module and qualified name"):
        querystash.memoize(functools.partial(_library, 1))
    with pytest.raises(ValueError, match="non-empty string"):
        querystash.memoize(titles_of, name="")
    # Named apart, each closure keeps its own entries.
    alice = querystash.memoize(_titles_by(data["alice"].pk), name=f"titles:{data['alice'].pk}")
    bob = querystash.memoize(_titles_by(data["bob"].pk), name=f"titles:{data['bob'].pk}")
    assert (alice(), bob(), alice(), bob()) == (["One", "Two"], ["Three"]) * 2


def test_control_closures_under_their_qualified_name_serve_each_others_rows(
        locmem, data, monkeypatch):
    """Planted: the label as it was, the module and qualified name whatever
    the function. Two closures then share entries: the check above is what
    keeps that from serving wrong rows."""
    monkeypatch.setattr(_memoize, "_default_label",
                        lambda fn: f"{fn.__module__}.{fn.__qualname__}")
    alice = querystash.memoize(_titles_by(data["alice"].pk))
    bob = querystash.memoize(_titles_by(data["bob"].pk))
    assert alice() == ["One", "Two"]
    assert bob() == ["One", "Two"] != truth(bob)


@querystash.memoize(name="tests.one_name")
def _book_titles():
    return list(Book.objects.order_by("pk").values_list("title", flat=True))


@querystash.memoize(name="tests.one_name")
def _author_names():
    return list(Author.objects.order_by("pk").values_list("name", flat=True))


def test_two_functions_under_one_name_keep_their_own_entries(locmem, data):
    for _ in range(2):
        assert _book_titles() == ["One", "Two", "Three"] == truth(_book_titles)
        assert _author_names() == ["Alice", "Bob"] == truth(_author_names)


VERSION_1 = """
def titles(author_id):
    return list(Book.objects.filter(author_id=author_id).order_by("pk")
                .values_list("title", flat=True))
"""
#: the same function redeployed with another body (the same module and name)
VERSION_2 = VERSION_1.replace('order_by("pk")', 'order_by("-pk")')
#: a decorator that wraps with functools.wraps, put on the function
LOGGED = """
def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper

@logged"""


def _deployed(source: str):
    """``source``'s function as a module of the app would define it."""
    namespace = {"__name__": "shop.views", "Book": Book, "functools": functools}
    exec(compile(source, "shop/views.py", "exec"), namespace)
    return querystash.memoize(namespace["titles"])


def test_a_redeployed_function_does_not_read_the_old_codes_entries(locmem, data):
    old, new = _deployed(VERSION_1), _deployed(VERSION_2)
    assert old.querystash_memoized == new.querystash_memoized == "shop.views.titles"
    alice = data["alice"].pk
    assert old(alice) == ["One", "Two"] and old(alice) == ["One", "Two"]
    assert new(alice) == ["Two", "One"] == truth(new, alice)
    # moved down the file, not changed: the same entries
    again = _deployed("\n\n\n" + VERSION_1)
    assert calls_db(again, alice) == (["One", "Two"], 0)


def test_a_redeployed_function_under_another_decorator_does_not_read_old_entries(
        locmem, data):
    """``@memoize`` over a decorator's ``functools.wraps`` wrapper: the code
    that changed is the wrapped function's."""
    old, new = _deployed(LOGGED + VERSION_1), _deployed(LOGGED + VERSION_2)
    assert old.querystash_memoized == new.querystash_memoized == "shop.views.titles"
    alice = data["alice"].pk
    assert old(alice) == ["One", "Two"] and old(alice) == ["One", "Two"]
    assert new(alice) == ["Two", "One"] == truth(new, alice)


def test_control_without_the_fingerprint_a_redeployed_function_reads_old_entries(
        locmem, data, monkeypatch):
    monkeypatch.setattr(_memoize, "fingerprint", lambda fn: "")
    old, new = _deployed(VERSION_1), _deployed(VERSION_2)
    alice = data["alice"].pk
    assert old(alice) == ["One", "Two"]
    assert new(alice) == ["One", "Two"] != truth(new, alice)


FINGERPRINTED = """
def ranked(kind, limit=10, *, order=("-n", "name")):
    def inner():
        return kind in {"tag", "author", "book", "review", "shelf"}
    return (inner(), limit, order, 1.5, b"x", None, ...)
"""


def test_the_fingerprint_is_the_same_in_every_process():
    import subprocess
    import sys

    def defined(source: str):
        namespace: dict = {}
        # dont_inherit: not this module's __future__ flags, as in the child
        exec(compile(source, "<ranked>", "exec", dont_inherit=True), namespace)
        return namespace["ranked"]

    here = _memoize.fingerprint(defined(FINGERPRINTED))
    script = ("import sys; from querystash._memoize import fingerprint; ns = {}; "
              "exec(compile(sys.stdin.read(), '<ranked>', 'exec'), ns); "
              "print(fingerprint(ns['ranked']))")
    seen = {
        subprocess.run([sys.executable, "-c", script], input=FINGERPRINTED, text=True,
                       capture_output=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert seen == {here}
    for was, now in (('"shelf"', '"shelves"'), ("limit=10", "limit=11"), ('"name"', '"title"'),
                     ("1.5", "2.5"), ('b"x"', 'b"y"'), ("...", "0")):
        assert _memoize.fingerprint(defined(FINGERPRINTED.replace(was, now))) != here, (was, now)


# -- async -------------------------------------------------------------------------------


@querystash.memoize
async def async_titles(status):
    titles = [b.title async for b in Book.objects.filter(status=status).order_by("pk")]
    return titles, await Author.objects.acount()


def test_async(locmem, data):
    from asgiref.sync import async_to_sync

    run = async_to_sync(async_titles)
    assert run(1) == (["One", "Three"], 2)
    hits = stats(async_titles.querystash_memoized).get("hits", 0)
    result, queries = calls_db(run, 1)
    assert result == (["One", "Three"], 2) and queries == 0
    assert stats(async_titles.querystash_memoized)["hits"] == hits + 1
    Book.objects.filter(pk=data["two"].pk).update(status=1)
    assert run(1) == (["One", "Two", "Three"], 2)


# -- counters and the command ----------------------------------------------------------------


def test_stats_command_shows_memoized_functions(locmem, data):
    from io import StringIO

    from django.core.management import call_command

    library(1)
    library(1)
    raw_count()
    out = StringIO()
    call_command("querystash", "stats", stdout=out)
    text = out.getvalue()
    line = next(ln for ln in text.splitlines() if ln.startswith(LABEL))
    assert line.split()[1:4] == ["1", "1", "1"]  # hits, misses, fills
    assert f"{raw_count.querystash_memoized}: {_capture.RAW_READ} (1)" in text


def test_stamps_that_cannot_be_established_veto_the_fill(locmem, data, monkeypatch):
    def refuse(mapping, timeout):
        raise ConnectionError("the store refuses new stamps")

    monkeypatch.setattr(locmem.storage, "add_many", refuse)
    # A read's own adds skipped (the contract allows it): the stamps it finds
    # missing go through add_many, which refuses.
    monkeypatch.setattr(locmem.storage, "add_get_many",
                        lambda mapping, keys, timeout: locmem.storage.get_many(keys))
    assert library(1) == truth(library, 1)
    # the capture's own stamp read (per-query caching is not used inside it)
    assert stats().get(_memoize.VETO + _capture.STORE) == 1, stats()
    assert "fills" not in stats()


def test_nothing_is_served_inside_querystash_disabled(locmem, data):
    old = prime(library, 1)
    with querystash.disabled():
        result, queries = calls_db(library, 1)
    assert result == old and queries == 5  # every query on the database
    assert stats().get("bypasses") == 1 and stats().get("hits") == 1
    assert assert_hit(library, 1) == old  # served again outside the block


# -- the vetoes the read path decides: key function, untracked statements, caching off ------


class RefusingKeys:
    """A key function that refuses every query on reviews (the others as usual)."""

    def __init__(self, default):
        self.default = default

    @querystash.hookimpl
    def querystash_key_function(self, config):
        default = self.default

        def key(info):
            if "testapp_review" in info.tables:
                raise querystash.Uncacheable("no reviews")
            return default(info)

        return key


@contextmanager
def refusing_keys():
    from querystash import plugins

    default = _runtime.current.key_function
    plugins.register(RefusingKeys(default), name="memo-refusing-keys")
    try:
        yield
    finally:
        plugins.unregister("memo-refusing-keys")


def test_a_query_the_key_function_refuses_vetoes_the_fill(data):
    with configured("default", "per-query"), refusing_keys():
        reviews = querystash.memoize(lambda: Review.objects.count(), name="veto.unkeyed")
        books = querystash.memoize(lambda: Book.objects.count(), name="veto.keyed")
        assert reviews() == reviews() == 2
        assert books() == books() == 3
    assert stats("veto.unkeyed").get(_memoize.VETO + _capture.UNKEYED) == 2
    assert "fills" not in stats("veto.unkeyed")
    assert stats("veto.keyed").get("hits") == 1  # the key function still keys the others


def test_a_query_per_query_caching_would_not_key_is_not_asked(data):
    # memo-only: no per-query caching of reviews, so their key is never computed
    with configured("default", "memo-only"), refusing_keys():
        reviews = querystash.memoize(lambda: Review.objects.count(), name="veto.unasked")
        assert reviews() == reviews() == 2
    assert stats("veto.unasked").get("hits") == 1


def _untracked():
    from django.db.models.sql.constants import CURSOR

    # A read compiler run for a cursor, not rows: the read path does not follow it.
    compiler = Book.objects.filter(status=1).query.get_compiler(DEFAULT_DB_ALIAS)
    cursor = compiler.execute_sql(CURSOR)
    try:
        return len(cursor.fetchall())
    finally:
        cursor.close()


def _off_inside():
    with querystash.disabled():
        return Book.objects.count()


@querystash.memoize
def _counted_while_off():
    return Book.objects.count()


def _off_nested():
    with querystash.disabled():
        inner = _counted_while_off()  # bypassed: its query reports to this call
    return inner, Author.objects.count()


@pytest.mark.parametrize("case, reason, expected", [
    ("untracked", _capture.UNTRACKED, 2),
    ("off", _capture.OFF, 3),
])
def test_an_untracked_or_switched_off_query_vetoes_the_fill(locmem, data, case, reason, expected):
    fn = {"untracked": _untracked, "off": _off_inside}[case]
    memoized = querystash.memoize(fn, name=f"veto.{case}")
    assert memoized() == memoized() == expected
    counts = stats(f"veto.{case}")
    assert counts.get(_memoize.VETO + reason) == 2, counts
    assert "fills" not in counts and "hits" not in counts


def test_a_memoized_call_switched_off_inside_another_vetoes_the_outer(locmem, data):
    outer = querystash.memoize(_off_nested, name="veto.off-nested")
    assert outer() == outer() == (3, 2)
    assert stats("veto.off-nested").get(_memoize.VETO + _capture.OFF) == 2
    assert stats(_counted_while_off.querystash_memoized).get("bypasses") == 2
    Book.objects.create(title="Four", author=data["bob"])
    assert outer() == (4, 2)


def test_the_vetoes_show_in_the_stats_command(locmem, data):
    from io import StringIO

    from django.core.management import call_command

    with refusing_keys():
        querystash.memoize(lambda: Review.objects.count(), name="cmd.unkeyed")()
    querystash.memoize(_untracked, name="cmd.untracked")()
    querystash.memoize(_off_inside, name="cmd.off")()
    out = StringIO()
    call_command("querystash", "stats", stdout=out)
    text = out.getvalue()
    if locmem.config["MODELS"]:  # memo-only: reviews are never keyed
        assert f"cmd.unkeyed: {_capture.UNKEYED} (1)" in text
    assert f"cmd.untracked: {_capture.UNTRACKED} (1)" in text
    assert f"cmd.off: {_capture.OFF} (1)" in text


# -- entries on the in-process store --------------------------------------------------------


@querystash.memoize
def mutable_titles():
    return {"titles": [b.title for b in Book.objects.order_by("pk")]}


@querystash.memoize
def frozen_titles():
    return tuple(b.title for b in Book.objects.order_by("pk"))


def test_a_caller_mutating_a_served_value_never_changes_the_entry(setup, data):
    first = mutable_titles()
    first["titles"].append("Mutated")
    first["extra"] = 1
    served = assert_hit(mutable_titles)
    assert served == {"titles": ["One", "Two", "Three"]} == truth(mutable_titles)
    served["titles"].clear()
    assert assert_hit(mutable_titles) == truth(mutable_titles)


def test_an_immutable_value_is_kept_as_it_is_in_process(locmem, data):
    first = frozen_titles()
    assert assert_hit(frozen_titles) is first  # no copy needed: nothing can change it
    entry = next(v for _, v in locmem.storage._data.values()
                 if type(v) is _memo_entry.Frozen and v.value is first)
    assert entry.pickled is False
    mutable_titles()
    entry = next(v for _, v in locmem.storage._data.values()
                 if type(v) is _memo_entry.Frozen and v.pickled)
    assert type(entry.value) is bytes


def test_positive_control_a_mutable_value_kept_as_it_is_is_caught(locmem, data, monkeypatch):
    monkeypatch.setattr(_memo_entry, "immutable", lambda value: True)  # the planted bug
    first = mutable_titles()
    first["titles"].append("Mutated")
    assert assert_hit(mutable_titles) != truth(mutable_titles)  # the test above would fail


def test_a_foreign_object_under_a_memoized_key_is_a_miss(locmem, data):
    frozen_titles()
    key = next(k for k, (_, v) in locmem.storage._data.items()
               if type(v) is _memo_entry.Frozen)
    locmem.storage.set(key, ("not", "an", "entry"), 60)
    assert frozen_titles() == truth(frozen_titles)
    assert stats(frozen_titles.querystash_memoized).get("corrupt") == 1


def test_a_signed_entry_under_another_key_is_refused(redis_cache_alias, data):
    with configured(redis_cache_alias, "memo-only") as rt:
        frozen_titles()
        mutable_titles()
        key_a = key_of(rt, frozen_titles)
        key_b = key_of(rt, mutable_titles)
        rt.storage.set(key_a, rt.storage.get_many([key_b])[0], 60)
        assert frozen_titles() == truth(frozen_titles)
        assert stats(frozen_titles.querystash_memoized).get("corrupt") == 1


def _with_body(blob: bytes, value) -> bytes:
    """``blob`` (a signed entry) with its pickled result swapped for ``value``'s,
    header and MAC kept: a planted entry that no longer verifies."""
    end = _memo_entry._HEAD + int.from_bytes(blob[_memo_entry._LEN:_memo_entry._HEAD], "big")
    return blob[:end] + pickle.dumps(value)


def _planted_after_a_hit(rt) -> bytes:
    """Fill and hit ``frozen_titles`` (its entry verified once, remembered
    by the hit path), then plant the entry with another result under its key."""
    prime(frozen_titles)
    key = key_of(rt, frozen_titles)
    assert key in _memoize._verified  # the shortcut is in play for the next hit
    blob = rt.storage.get_many([key])[0]
    rt.storage.set(key, _with_body(blob, ("Planted",)), 60)
    return key


def test_an_entry_changed_after_a_verified_hit_is_verified_again(redis_cache_alias, data):
    with configured(redis_cache_alias, "memo-only") as rt:
        _planted_after_a_hit(rt)
        assert frozen_titles() == truth(frozen_titles)
        assert stats(frozen_titles.querystash_memoized).get("corrupt") == 1
        assert assert_hit(frozen_titles) == truth(frozen_titles)  # filled again


def test_positive_control_a_verified_entry_trusted_by_its_key_alone(
        redis_cache_alias, data, monkeypatch):
    # The planted bug: the remembered verification stands for any bytes under the key.
    monkeypatch.setattr(_memoize, "_same_entry", lambda seen, mac_key, blob: seen[0] is mac_key)
    with configured(redis_cache_alias, "memo-only") as rt:
        _planted_after_a_hit(rt)
        assert frozen_titles() == ("Planted",) != truth(frozen_titles)  # the test above fails


# -- the written-tags shortcut ----------------------------------------------------------------


def test_the_hit_path_sees_its_own_writes_with_other_threads_writing_too(locmem, data):
    from querystash import _transactions

    prime(library, 1)
    assert _transactions.holding == 0
    with transaction.atomic():
        Book.objects.filter(pk=data["one"].pk).update(title="Mine")
        assert _transactions.holding == 1
        assert "Mine" in [b[1] for b in library(1)["books"]]
    assert _transactions.holding == 0
    with pytest.raises(RuntimeError), transaction.atomic():
        Author.objects.filter(pk=data["bob"].pk).update(name="Gone")
        raise RuntimeError("roll back")
    assert _transactions.holding == 0


def test_positive_control_the_written_tags_shortcut_never_looking(locmem, data, monkeypatch):
    from querystash import _transactions

    record = _transactions.record

    def undercounting(connection, tags):  # the planted bug: the count stays 0
        record(connection, tags)
        _transactions.holding = 0

    monkeypatch.setattr(_transactions, "holding", 0)
    monkeypatch.setattr(_transactions, "record", undercounting)
    inside = refilled_by_another_connection_during_a_write(data)
    assert "Mine" not in [b[1] for b in inside["books"]]  # its own write unseen: caught
