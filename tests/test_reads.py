"""The read path: what is cached, that a hit equals the database, and the
stamp protocol that decides whether an entry may be served."""

from __future__ import annotations

import pickle
from contextlib import nullcontext
from datetime import UTC, datetime
from decimal import Decimal

import pluggy
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import connection
from django.db.models import Count, Exists, Max, OuterRef, Prefetch, Subquery, Sum
from django.test import override_settings

from querystash import _codec, _localstore, _runtime, conf, plugins
from tests.testapp.models import Author, Book, Place, Restaurant, Review, Tag

pytestmark = pytest.mark.django_db(transaction=True)


# -- helpers -------------------------------------------------------------------


def qs_settings(**overrides):
    """``override_settings`` of QUERYSTASH keys on top of the suite's settings."""
    return override_settings(QUERYSTASH={**settings.QUERYSTASH, **overrides})


def assert_cached(read, model, nq, queries=1):
    """``read(base_queryset)`` runs once against the database (``queries``
    statements), then a second time with no SQL; both equal the uncached
    result read through ``.nocache()``. Returns that result."""
    expected = read(model.objects.nocache())
    with nq(queries):
        first = read(model.objects.all())
    with nq(0):
        second = read(model.objects.all())
    assert first == expected
    assert second == expected
    return expected


def assert_not_cached(read, model, nq, queries=1):
    """``read`` issues its SQL every time, and returns the database's result."""
    expected = read(model.objects.nocache())
    for _ in range(2):
        with nq(queries):
            assert read(model.objects.all()) == expected
    return expected


def book_rows(books):
    return [
        (b.pk, b.title, b.author_id, b.editor_id, b.price, b.status, b.published) for b in books
    ]


def catalogue(qs):
    """A read over books, their prices and tags (three tables)."""
    return list(
        qs.order_by("pk", "tags__name").values_list(
            "pk", "title", "price", "status", "author_id", "tags__name"
        )
    )


def entry_keys() -> set[str]:
    """The querystash entry keys (not stamps) now in the built-in store."""
    prefix = f"{settings.QUERYSTASH.get('KEY_PREFIX', 'qs')}:"
    return {k for k in _runtime.current.storage.keys() if k.startswith(prefix) and ":e:" in k}


def ttl(key: str) -> float:
    """Seconds left before ``key`` expires in the built-in store."""
    storage = _runtime.current.storage
    return storage.deadline(key) - storage._clock()


def stamp_key(table: str) -> str:
    return _runtime.current.stamp_prefix + table


@pytest.fixture
def library():
    ann = Author.objects.create(name="Ann", age=40)
    bob = Author.objects.create(name="Bob", age=25)
    sf, poetry, history = (Tag.objects.create(name=n) for n in ("sf", "poetry", "history"))
    books = []
    for i in range(8):
        book = Book.objects.create(
            title=f"Book {i}",
            author=ann if i % 2 == 0 else bob,
            editor=bob if i % 3 == 0 else None,
            price=Decimal(f"{i + 1}.{i}5"),
            status=i % 3,
            published=datetime(2024, 1, i + 1, 12, 30, 15, 123456, tzinfo=UTC) if i % 4 else None,
        )
        book.tags.set([sf, poetry] if i % 2 else [history])
        Review.objects.create(book=book, score=i)
        books.append(book)
    return {"ann": ann, "bob": bob, "books": books, "tags": (sf, poetry, history)}


# -- what is cached --------------------------------------------------------------


def test_repeated_query_hits(library, counts, django_assert_num_queries):
    assert_cached(
        lambda qs: book_rows(qs.filter(status=1).order_by("pk")), Book, django_assert_num_queries
    )
    c = counts("testapp.Book")
    assert (c["misses"], c["fills"], c["hits"]) == (1, 1, 1)


def test_get_by_pk(library, django_assert_num_queries):
    pk = library["books"][3].pk
    assert_cached(lambda qs: book_rows([qs.get(pk=pk)]), Book, django_assert_num_queries)


def test_get_miss_raises_does_not_exist_every_time(library, django_assert_num_queries):
    with django_assert_num_queries(1):
        with pytest.raises(Book.DoesNotExist):
            Book.objects.get(pk=10**9)
    with django_assert_num_queries(0):  # the empty result is cached too
        with pytest.raises(Book.DoesNotExist):
            Book.objects.get(pk=10**9)


def test_filter_fetch(library, django_assert_num_queries):
    assert_cached(
        lambda qs: book_rows(qs.filter(author__name="Ann", status__gte=1)),
        Book,
        django_assert_num_queries,
    )


def test_values(library, django_assert_num_queries):
    assert_cached(
        lambda qs: list(qs.order_by("pk").values("title", "price", "published")),
        Book,
        django_assert_num_queries,
    )


def test_values_list_flat(library, django_assert_num_queries):
    titles = assert_cached(
        lambda qs: list(qs.order_by("-pk").values_list("title", flat=True)),
        Book,
        django_assert_num_queries,
    )
    assert titles[0] == "Book 7"


def test_count(library, django_assert_num_queries):
    assert (
        assert_cached(lambda qs: qs.filter(status=0).count(), Book, django_assert_num_queries) == 3
    )


def test_exists(library, django_assert_num_queries):
    assert (
        assert_cached(lambda qs: qs.filter(status=2).exists(), Book, django_assert_num_queries)
        is True
    )
    assert (
        assert_cached(lambda qs: qs.filter(status=99).exists(), Book, django_assert_num_queries)
        is False
    )


def test_aggregate(library, django_assert_num_queries):
    result = assert_cached(
        lambda qs: qs.aggregate(total=Sum("price"), n=Count("pk"), last=Max("published")),
        Book,
        django_assert_num_queries,
    )
    assert result["n"] == 8
    assert isinstance(result["total"], Decimal)


def test_first_and_last(library, django_assert_num_queries):
    assert_cached(
        lambda qs: book_rows([qs.order_by("price").first()]), Book, django_assert_num_queries
    )
    assert_cached(
        lambda qs: book_rows([qs.order_by("price").last()]), Book, django_assert_num_queries
    )


def test_slice(library, django_assert_num_queries):
    rows = assert_cached(
        lambda qs: book_rows(qs.order_by("pk")[2:5]), Book, django_assert_num_queries
    )
    assert [r[1] for r in rows] == ["Book 2", "Book 3", "Book 4"]


def test_different_slices_are_different_entries(library, django_assert_num_queries):
    assert_cached(lambda qs: book_rows(qs.order_by("pk")[0:2]), Book, django_assert_num_queries)
    assert_cached(lambda qs: book_rows(qs.order_by("pk")[2:4]), Book, django_assert_num_queries)


def test_select_related_rows(library, django_assert_num_queries):
    def read(qs):
        return [
            (b.title, b.author.name, b.author.age, b.editor.name if b.editor else None)
            for b in qs.select_related("author", "editor").order_by("pk")
        ]

    rows = assert_cached(read, Book, django_assert_num_queries)
    assert rows[0] == ("Book 0", "Ann", 40, "Bob")
    assert rows[1] == ("Book 1", "Bob", 25, None)


def test_select_related_row_fresh_after_related_write(library, django_assert_num_queries):
    def read(qs):
        return [(b.title, b.author.name) for b in qs.select_related("author").order_by("pk")]

    assert_cached(read, Book, django_assert_num_queries)
    Author.objects.filter(name="Ann").update(name="Annie")
    with django_assert_num_queries(1):
        rows = read(Book.objects.all())
    assert rows == read(Book.objects.nocache())
    assert rows[0] == ("Book 0", "Annie")


def test_prefetch_related_caches_both_queries(library, django_assert_num_queries):
    def read(qs, books=None):
        prefetch = Prefetch("books", queryset=books) if books is not None else "books"
        return [
            (a.name, sorted(b.title for b in a.books.all()))
            for a in qs.prefetch_related(prefetch).order_by("pk")
        ]

    expected = read(Author.objects.nocache(), Book.objects.nocache())
    with django_assert_num_queries(2):
        assert read(Author.objects.all()) == expected
    with django_assert_num_queries(0):
        assert read(Author.objects.all()) == expected


def test_prefetch_related_m2m(library, django_assert_num_queries):
    def read(qs, tags=None):
        prefetch = Prefetch("tags", queryset=tags) if tags is not None else "tags"
        return [
            (b.title, sorted(t.name for t in b.tags.all()))
            for b in qs.prefetch_related(prefetch).order_by("pk")
        ]

    expected = read(Book.objects.nocache(), Tag.objects.nocache())
    with django_assert_num_queries(2):
        assert read(Book.objects.all()) == expected
    # Django builds the m2m prefetch query with .extra(select=...): cached all the same.
    with django_assert_num_queries(0):
        assert read(Book.objects.all()) == expected
    library["books"][0].tags.add(library["tags"][1])
    with django_assert_num_queries(1):  # only the tags query reads the through table
        fresh = read(Book.objects.all())
    assert fresh == read(Book.objects.nocache(), Tag.objects.nocache())
    assert fresh[0] == ("Book 0", ["history", "poetry"])


def book_count_subquery():
    return Subquery(
        Book.objects.filter(author=OuterRef("pk"))
        .order_by()
        .values("author")
        .annotate(c=Count("pk"))
        .values("c")
    )


def test_annotate_with_subquery(library, django_assert_num_queries):
    def read(qs):
        return list(qs.annotate(n=book_count_subquery()).order_by("pk").values_list("name", "n"))

    assert assert_cached(read, Author, django_assert_num_queries) == [("Ann", 4), ("Bob", 4)]
    # A write to the table inside the subquery reaches the entry.
    Book.objects.filter(pk=library["books"][0].pk).delete()
    with django_assert_num_queries(1):
        fresh = read(Author.objects.all())
    assert fresh == read(Author.objects.nocache()) == [("Ann", 3), ("Bob", 4)]


def test_filter_with_exists_subquery_fresh_after_write(library, django_assert_num_queries):
    def read(qs):
        high = Review.objects.filter(book=OuterRef("pk"), score__gte=6)
        return list(qs.filter(Exists(high)).order_by("pk").values_list("title", flat=True))

    assert assert_cached(read, Book, django_assert_num_queries) == ["Book 6", "Book 7"]
    Review.objects.create(book=library["books"][1], score=9)
    with django_assert_num_queries(1):
        assert read(Book.objects.all()) == ["Book 1", "Book 6", "Book 7"]


def test_iterator_not_cached_by_settings(library, django_assert_num_queries):
    assert_not_cached(
        lambda qs: book_rows(qs.order_by("pk").iterator()), Book, django_assert_num_queries
    )


def test_iterator_cached_with_cache(library, django_assert_num_queries):
    def read(qs):
        return book_rows(qs.order_by("pk").iterator(chunk_size=3))

    expected = read(Book.objects.nocache())
    with django_assert_num_queries(1):
        assert read(Book.objects.cache()) == expected
    with django_assert_num_queries(0):
        assert read(Book.objects.cache()) == expected
    assert len(expected) == 8


# -- the MODELS setting -----------------------------------------------------------


def test_exact_label_only_caches_that_model(library, django_assert_num_queries):
    with qs_settings(MODELS={"testapp.Book": {"ops": "all"}}):
        assert_cached(lambda qs: qs.count(), Book, django_assert_num_queries)
        assert_not_cached(lambda qs: qs.count(), Author, django_assert_num_queries)


def test_label_is_case_insensitive(library, django_assert_num_queries):
    with qs_settings(MODELS={"TestApp.book": {"ops": "all"}}):
        assert_cached(lambda qs: qs.count(), Book, django_assert_num_queries)


def test_app_wildcard(library, django_assert_num_queries):
    with qs_settings(MODELS={"testapp.*": {"ops": "all"}}):
        assert_cached(lambda qs: qs.count(), Book, django_assert_num_queries)
        assert_cached(lambda qs: qs.count(), Author, django_assert_num_queries)
        assert_not_cached(lambda qs: qs.count(), Permission, django_assert_num_queries)


def test_global_wildcard(library, django_assert_num_queries):
    with qs_settings(MODELS={"*.*": {"ops": "all"}}):
        assert_cached(lambda qs: qs.count(), Book, django_assert_num_queries)
        assert_cached(lambda qs: qs.count(), Permission, django_assert_num_queries)


def test_model_set_to_false_overrides_wildcard(library, django_assert_num_queries):
    with qs_settings(
        MODELS={"*.*": {"ops": "all"}, "testapp.*": {"ops": "all"}, "testapp.Author": False}
    ):
        assert_not_cached(lambda qs: qs.count(), Author, django_assert_num_queries)
        assert_cached(lambda qs: qs.count(), Book, django_assert_num_queries)


def test_no_models_nothing_cached(library, counts, django_assert_num_queries):
    with qs_settings(MODELS={}):
        assert_not_cached(lambda qs: book_rows(qs.all()), Book, django_assert_num_queries)
    assert counts("testapp.Book").get("misses", 0) == 0


def test_ops_list_restricts(library, django_assert_num_queries):
    with qs_settings(MODELS={"testapp.Book": {"ops": ["count"]}}):
        assert_cached(lambda qs: qs.filter(status=1).count(), Book, django_assert_num_queries)
        assert_not_cached(
            lambda qs: book_rows(qs.filter(status=1)), Book, django_assert_num_queries
        )
        assert_not_cached(lambda qs: qs.filter(status=1).exists(), Book, django_assert_num_queries)
        assert_not_cached(lambda qs: qs.aggregate(Sum("price")), Book, django_assert_num_queries)


def test_cache_get_false_globally(library, django_assert_num_queries):
    pk = library["books"][2].pk
    with qs_settings(CACHE_GET=False):
        assert_not_cached(lambda qs: book_rows([qs.get(pk=pk)]), Book, django_assert_num_queries)
        assert_cached(lambda qs: book_rows(qs.filter(pk=pk)), Book, django_assert_num_queries)


def test_cache_get_per_model(library, django_assert_num_queries):
    book_pk, author_pk = library["books"][2].pk, library["ann"].pk
    with qs_settings(
        MODELS={"testapp.*": {"ops": "all"}, "testapp.Book": {"ops": "all", "cache_get": False}}
    ):
        assert_not_cached(
            lambda qs: book_rows([qs.get(pk=book_pk)]), Book, django_assert_num_queries
        )
        assert_cached(lambda qs: qs.get(pk=author_pk).name, Author, django_assert_num_queries)


def test_cache_get_per_model_overrides_global_false(library, django_assert_num_queries):
    pk = library["books"][2].pk
    with qs_settings(CACHE_GET=False, MODELS={"testapp.Book": {"ops": "all", "cache_get": True}}):
        assert_cached(lambda qs: book_rows([qs.get(pk=pk)]), Book, django_assert_num_queries)


# -- .cache() / .nocache() --------------------------------------------------------------


def test_cache_opt_in_on_model_not_in_settings(library, django_assert_num_queries):
    def fetch(qs):
        return book_rows(qs.filter(status=2).order_by("pk"))

    with qs_settings(MODELS={}):
        assert_not_cached(fetch, Book, django_assert_num_queries)
        expected = fetch(Book.objects.nocache())
        with django_assert_num_queries(1):
            assert fetch(Book.objects.cache(ops=["fetch"], timeout=30)) == expected
        with django_assert_num_queries(0):
            assert fetch(Book.objects.cache(ops=["fetch"], timeout=30)) == expected
        # count is not among the ops asked for
        for _ in range(2):
            with django_assert_num_queries(1):
                assert Book.objects.cache(ops=["fetch"], timeout=30).count() == 8


def test_cache_timeout_is_the_entry_ttl(library):
    with qs_settings(MODELS={}):
        before = entry_keys()
        list(Book.objects.cache(ops="fetch", timeout=30).filter(status=1))
        (key,) = entry_keys() - before
    assert 0 < ttl(key) <= 30


def test_settings_timeout_is_the_entry_ttl(library):
    before = entry_keys()
    list(Book.objects.filter(status=1))
    (key,) = entry_keys() - before
    assert 500 < ttl(key) <= 600  # "timeout": 600 in settings


def test_cache_queryset_chain_keeps_the_spec(library, django_assert_num_queries):
    with qs_settings(MODELS={}):

        def read(qs):
            return book_rows(qs.filter(status=1).exclude(title="x").order_by("-pk")[:2])

        expected = read(Book.objects.nocache())
        with django_assert_num_queries(1):
            assert read(Book.objects.cache()) == expected
        with django_assert_num_queries(0):
            assert read(Book.objects.cache()) == expected


def test_nocache_on_enabled_model(library, counts, django_assert_num_queries):
    for _ in range(3):
        with django_assert_num_queries(1):
            rows = book_rows(Book.objects.nocache().filter(status=1))
        assert rows == book_rows(Book.objects.filter(status=1))
    c = counts("testapp.Book")
    assert c["hits"] == 2 and c["misses"] == 1  # only the control read was cached


def test_cache_bad_op_raises(library):
    with pytest.raises(ValueError, match="unknown cache op"):
        Book.objects.cache(ops=["fetch", "delete"])
    with pytest.raises(ValueError, match="unknown cache op"):
        Book.objects.all().cache(ops="gett")


@pytest.mark.parametrize("timeout", [0, -5, 1.5, "60"])
def test_cache_bad_timeout_raises(library, timeout):
    with pytest.raises(ValueError, match="timeout"):
        Book.objects.cache(timeout=timeout)


# -- values survive the round trip -----------------------------------------------------------


def test_decimal_datetime_none_values_identical(library, django_assert_num_queries):
    def read(qs):
        return list(qs.order_by("pk").values_list("price", "published", "editor_id"))

    rows = assert_cached(read, Book, django_assert_num_queries)
    cached = read(Book.objects.all())
    assert all(type(price) is Decimal for price, _, _ in cached)
    assert cached[1][0] == Decimal("2.15")
    published = [p for _, p, _ in cached]
    assert published[0] is None
    assert published[1] == datetime(2024, 1, 2, 12, 30, 15, 123456, tzinfo=UTC)
    assert published[1].utcoffset() is not None  # aware, as USE_TZ gives it
    assert [e for _, _, e in rows].count(None) == 5


def test_booleans_identical_on_mti_child(django_assert_num_queries):
    Restaurant.objects.create(name="Luigi", serves_pizza=True)
    Restaurant.objects.create(name="Chez", serves_pizza=False)
    Place.objects.create(name="Park")

    rows = assert_cached(
        lambda qs: list(qs.order_by("name").values_list("name", "serves_pizza")),
        Restaurant,
        django_assert_num_queries,
    )
    assert rows == [("Chez", False), ("Luigi", True)]
    assert all(type(flag) is bool for _, flag in rows)
    cached = [(r.name, r.serves_pizza) for r in Restaurant.objects.order_by("name")]
    assert cached == rows


# -- writes make the next read fresh -----------------------------------------------------------


def _save(lib):
    book = Book.objects.get(pk=lib["books"][0].pk)
    book.title, book.price = "Renamed", Decimal("99.99")
    book.save()


def _update(lib):
    Book.objects.filter(status=1).update(price=Decimal("0.01"), status=5)


def _delete_instance(lib):
    Book.objects.get(pk=lib["books"][1].pk).delete()


def _queryset_delete(lib):
    Book.objects.filter(status=2).delete()


def _cascade_delete(lib):
    Author.objects.filter(pk=lib["bob"].pk).delete()  # cascades to Bob's books


def _bulk_create(lib):
    Book.objects.bulk_create([Book(title=f"New {i}", author=lib["ann"]) for i in range(3)])


def _bulk_update(lib):
    books = list(Book.objects.nocache().filter(status=0))
    for b in books:
        b.price = Decimal("42.00")
    Book.objects.bulk_update(books, ["price"])


def _m2m_add(lib):
    lib["books"][0].tags.add(lib["tags"][0])


def _m2m_remove(lib):
    lib["books"][1].tags.remove(lib["tags"][1])


def _m2m_clear(lib):
    lib["books"][2].tags.clear()


def _raw_cursor(lib):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE testapp_book SET title = %s WHERE status = %s", ["Raw", 0])


@pytest.mark.parametrize(
    "write",
    [
        _save,
        _update,
        _delete_instance,
        _queryset_delete,
        _cascade_delete,
        _bulk_create,
        _bulk_update,
        _m2m_add,
        _m2m_remove,
        _m2m_clear,
        _raw_cursor,
    ],
)
def test_write_makes_next_read_fresh(library, write, django_assert_num_queries):
    before = assert_cached(catalogue, Book, django_assert_num_queries)
    write(library)
    with django_assert_num_queries(1):
        after = catalogue(Book.objects.all())
    assert after == catalogue(Book.objects.nocache())
    assert after != before  # the write did change what the query reads
    with django_assert_num_queries(0):  # and the fresh result is cached again
        assert catalogue(Book.objects.all()) == after


def test_write_to_unrelated_table_keeps_entry(library, django_assert_num_queries):
    expected = assert_cached(lambda qs: book_rows(qs.all()), Book, django_assert_num_queries)
    Place.objects.create(name="Elsewhere")
    with django_assert_num_queries(0):
        assert book_rows(Book.objects.all()) == expected


# -- the stamp protocol -------------------------------------------------------------------


def test_stamp_keys_are_named_after_tables(library):
    # The core's table tags, whatever invalidation plugins are installed.
    installed = [
        plugins.pm.get_name(impl.plugin)
        for impl in plugins.pm.hook.querystash_invalidation_strategy.get_hookimpls()
        if impl.plugin_name in plugins.versions
    ]
    table_level = qs_settings(
        DISABLED_PLUGINS=[*settings.QUERYSTASH.get("DISABLED_PLUGINS", ()), *installed]
    )
    with table_level:
        list(Book.objects.filter(status=1))
    assert _runtime.current.stamp_prefix == "qs:t:"
    storage = _runtime.current.storage
    book, glob = storage.get_many([stamp_key("testapp_book"), stamp_key("*")])
    assert isinstance(book, bytes) and len(book) == 8
    assert isinstance(glob, bytes) and len(glob) == 8


def test_deleted_table_stamp_makes_next_read_a_miss(library, counts, django_assert_num_queries):
    def read(qs):
        return book_rows(qs.filter(status=1))

    # The core's table tags, whatever invalidation plugins are installed.
    installed = [
        plugins.pm.get_name(impl.plugin)
        for impl in plugins.pm.hook.querystash_invalidation_strategy.get_hookimpls()
        if impl.plugin_name in plugins.versions
    ]
    table_level = qs_settings(
        DISABLED_PLUGINS=[*settings.QUERYSTASH.get("DISABLED_PLUGINS", ()), *installed]
    )
    with table_level:
        expected = assert_cached(read, Book, django_assert_num_queries)
        _runtime.current.storage.delete_many([stamp_key("testapp_book")])
        with django_assert_num_queries(1):
            assert read(Book.objects.all()) == expected
        assert counts("testapp.Book")["misses"] == 2
        with django_assert_num_queries(0):  # refilled under a new stamp
            assert read(Book.objects.all()) == expected


def test_deleted_global_stamp_misses_everything(library, django_assert_num_queries):
    books = assert_cached(lambda qs: qs.count(), Book, django_assert_num_queries)
    authors = assert_cached(lambda qs: qs.count(), Author, django_assert_num_queries)
    _runtime.current.storage.delete_many([stamp_key("*")])
    with django_assert_num_queries(2):
        assert (Book.objects.count(), Author.objects.count()) == (books, authors)


def test_deleted_unrelated_stamp_keeps_entry(library, django_assert_num_queries):
    expected = assert_cached(lambda qs: qs.count(), Book, django_assert_num_queries)
    _runtime.current.storage.delete_many([stamp_key("testapp_tag")])
    with django_assert_num_queries(0):
        assert Book.objects.count() == expected


def test_changed_stamp_value_makes_next_read_a_miss(library, django_assert_num_queries):
    expected = assert_cached(lambda qs: qs.count(), Book, django_assert_num_queries)
    _runtime.current.storage.set(stamp_key("testapp_book"), b"\x00" * 8, 60)
    with django_assert_num_queries(1):
        assert Book.objects.count() == expected


_planted_calls = []


def _planted(*args):
    _planted_calls.append(args)
    return "planted"


class _Planted:
    def __reduce__(self):
        return (_planted, ("unpickled",))


def _garbage(key, blob, stamps):
    return b"\x00\xffnot an entry at all"


def _truncated(key, blob, stamps):
    return blob[: len(blob) // 2]


def _not_bytes(key, blob, stamps):
    return {"rows": [(1, "x")]}


def _unsigned_pickle(key, blob, stamps):
    # Valid pickle, right stamps, plausible rows: only the signature is missing.
    return pickle.dumps((stamps, 123))


def _forged_signature(key, blob, stamps):
    return _codec.MAGIC + b"\x00" * 16 + pickle.dumps((stamps, 123))


def _planted_code(key, blob, stamps):
    return _codec.MAGIC + b"\x00" * 16 + pickle.dumps(_Planted())


def _signed_under_another_key(key, blob, stamps):
    return _codec.encode(_runtime.current.secret, key + "x", (stamps, 123))


def _entry_under_another_key(key, blob, stamps):
    # The in-process store's entries carry their key, as signed ones do.
    return _localstore.freeze(key + "x", stamps, 123)


#: what a shared store (bytes, signed entries) must refuse
SIGNED = [_garbage, _truncated, _unsigned_pickle, _forged_signature, _planted_code,
          _signed_under_another_key]
#: what the in-process store (entries as objects, never signed) must refuse
LOCAL = [_garbage, _not_bytes, _unsigned_pickle, _forged_signature, _planted_code,
         _signed_under_another_key, _entry_under_another_key]


def _filled_key(storage, read):
    """The key of the entry ``read()`` fills, whatever the storage."""
    keys = []
    original = storage.set

    def spy(key, value, timeout):
        keys.append(key)
        return original(key, value, timeout)

    storage.set = spy
    try:
        result = read()
    finally:
        del storage.set
    (key,) = keys
    return key, result


@pytest.mark.parametrize(
    ("store", "corrupt"),
    [("local", c) for c in LOCAL] + [("redis", c) for c in SIGNED],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_corrupt_entry_is_a_miss(library, store, corrupt, counts, django_assert_num_queries,
                                 request):
    if store == "redis":
        alias = request.getfixturevalue("redis_cache_alias")
        on_store = override_settings(CACHES={**settings.CACHES,
                                             "default": dict(settings.CACHES[alias])})
    else:
        on_store = nullcontext()
    with on_store:
        rt = _runtime.current
        assert rt.local == (store == "local")
        key, expected = _filled_key(rt.storage, lambda: Book.objects.filter(status=0).count())
        blob = rt.storage.get_many([key])[0]
        stamps = rt.storage.get_many([stamp_key("testapp_book"), stamp_key("*")])
        rt.storage.set(key, corrupt(key, blob, stamps), 60)
        _planted_calls.clear()

        with django_assert_num_queries(1):
            assert Book.objects.filter(status=0).count() == expected == 3
        assert _planted_calls == []
        c = counts("testapp.Book")
        assert c["corrupt"] == 1
        assert c["misses"] == 2 and c.get("hits", 0) == 0
        with django_assert_num_queries(0):  # the miss replaced the bad entry
            assert Book.objects.filter(status=0).count() == expected


def test_write_during_the_query_makes_the_fill_invalid(library, counts, django_assert_num_queries):
    """Stamps are read before the query runs: a write landing between the
    SELECT and the fill leaves an entry that is never served."""
    state = {"fired": False}

    def write_right_after_select(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not state["fired"] and sql.lstrip().upper().startswith("SELECT"):
            state["fired"] = True  # the SELECT has produced its (old) result
            with connection.cursor() as cursor:
                cursor.execute("UPDATE testapp_book SET status = %s", [7])
        return result

    def read():
        return Book.objects.filter(status=7).count()

    with connection.execute_wrapper(write_right_after_select):
        stale = read()
    assert state["fired"]
    assert stale == 0  # the query saw the data from before the write
    assert counts("testapp.Book")["fills"] == 1  # and filled its entry: born invalid

    with django_assert_num_queries(1):
        fresh = read()
    assert fresh == Book.objects.nocache().filter(status=7).count() == 8
    assert counts("testapp.Book")["misses"] == 2
    with django_assert_num_queries(0):
        assert read() == 8


def test_hits_call_no_pluggy_hook(library, monkeypatch, django_assert_num_queries):
    def read():
        return list(Book.objects.filter(status=1).values_list("title", flat=True))

    expected = read()  # fill
    calls = []
    original = pluggy.HookCaller.__call__

    def counting(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pluggy.HookCaller, "__call__", counting)
    with django_assert_num_queries(0):
        for _ in range(50):
            assert read() == expected
    assert calls == []
    # Control: the counting wrapper does see a hook call.
    plugins.pm.hook.querystash_key_function(config=conf.config())
    assert calls == ["querystash_key_function"]


def test_prefetch_lookups_follow_the_querysets_cache_request(django_assert_num_queries):
    # Tag and the m2m through table are not enabled by MODELS here: only the
    # queryset's .cache() makes its prefetch queries cacheable.
    author = Author.objects.create(name="p")
    book = Book.objects.create(title="t", author=author)
    book.tags.add(Tag.objects.create(name="x"), Tag.objects.create(name="y"))
    config = {**settings.QUERYSTASH, "MODELS": {}}

    def read(qs):
        return [(b.title, sorted(t.name for t in b.tags.all())) for b in qs]

    with override_settings(QUERYSTASH=config):
        expected = read(Book.objects.nocache().prefetch_related("tags"))
        assert read(Book.objects.cache().prefetch_related("tags")) == expected
        with django_assert_num_queries(0):
            assert read(Book.objects.cache().prefetch_related("tags")) == expected
        with django_assert_num_queries(2):  # neither asked: nothing cached
            read(Book.objects.prefetch_related("tags"))
        book.tags.add(Tag.objects.create(name="z"))
        fresh = read(Book.objects.cache().prefetch_related("tags"))
        assert fresh == read(Book.objects.nocache().prefetch_related("tags"))
        assert fresh[0][1] == ["x", "y", "z"]


def test_auto_created_through_models_are_not_cached_by_wildcards(django_assert_num_queries):
    # Django reads the through table itself to decide what add() inserts.
    through = Book.tags.through
    author = Author.objects.create(name="t")
    book = Book.objects.create(title="t", author=author)
    book.tags.add(Tag.objects.create(name="x"))
    for _ in range(2):
        with django_assert_num_queries(1):
            assert through.objects.filter(book=book).count() == 1
    # Named exactly, it is cached like any model.
    exact = {**settings.QUERYSTASH, "MODELS": {"testapp.Book_tags": {"ops": "all"}}}
    with override_settings(QUERYSTASH=exact):
        through.objects.filter(book=book).count()
        with django_assert_num_queries(0):
            assert through.objects.filter(book=book).count() == 1


def test_entry_keys_name_the_database_not_only_the_alias(monkeypatch):
    """Two sites (or staging and production) sharing a store under one
    KEY_PREFIX: same alias, same SQL, different databases, different keys."""
    from querystash import default_keys
    from querystash.events import QueryInfo

    key = default_keys.querystash_key_function(config=conf.config())
    info = QueryInfo("SELECT 1", (), "default", "multi", "fetch", frozenset())
    first = key(info)
    assert key(info) == first
    monkeypatch.setitem(connection.settings_dict, "NAME", "another_site")
    assert key(info) != first
    monkeypatch.undo()
    monkeypatch.setitem(connection.settings_dict, "HOST", "db2.internal")
    assert key(info) != first
