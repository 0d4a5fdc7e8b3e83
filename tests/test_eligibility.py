"""Queries the default eligibility rules never cache, each next to a positive
control: the same query without the volatile part IS cached."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import Exists, F, OuterRef, Subquery, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Now, Random
from django.test import override_settings

from querystash import _runtime
from tests.testapp.models import Author, AuthorView, Book, Review, Tag

pytestmark = pytest.mark.django_db(transaction=True)


def qs_settings(**overrides):
    return override_settings(QUERYSTASH={**settings.QUERYSTASH, **overrides})


def assert_cached(read, nq, expected):
    """First run reads the database, the second issues no SQL; both == expected."""
    with nq(1):
        assert read() == expected
    with nq(0):
        assert read() == expected


def assert_not_cached(read, nq, expected, times=3):
    """Every run issues its SQL, returns the database's result, and neither
    reads nor fills the cache."""
    before = cache_traffic()
    for _ in range(times):
        with nq(1):
            assert read() == expected
    assert cache_traffic() == before


def cache_traffic():
    totals = _runtime.current.stats.totals()
    return {k: totals.get(k, 0) for k in ("hits", "misses", "fills")}


def titles(qs):
    return sorted(qs.values_list("title", flat=True))


@pytest.fixture
def books():
    ann = Author.objects.create(name="Ann")
    bob = Author.objects.create(name="Bob")
    result = []
    for i in range(5):
        book = Book.objects.create(
            title=f"Book {i}",
            author=ann if i < 3 else bob,
            price=Decimal(i),
            status=i % 2,
            published=datetime(2020, 1, i + 1, tzinfo=UTC),
        )
        Review.objects.create(book=book, score=i)
        result.append(book)
    return result


ALL_TITLES = [f"Book {i}" for i in range(5)]


# -- select_for_update ---------------------------------------------------------------


def locking_block():
    """select_for_update needs a transaction where it means something (PG); on
    SQLite it compiles to plain SQL and a SQLite transaction never fills."""
    return transaction.atomic() if connection.features.has_select_for_update else nullcontext()


def test_select_for_update_not_cached(books, counts, django_assert_num_queries):
    def locked():
        return titles(Book.objects.select_for_update().filter(status=0).order_by())

    def plain():
        return titles(Book.objects.filter(status=0).order_by())

    expected = titles(Book.objects.nocache().filter(status=0))
    with locking_block():
        assert_not_cached(locked, django_assert_num_queries, expected)
        assert counts("testapp.Book")["vetoed"] == 3  # refused by eligibility
        # Control: the same query without the lock is cached.
        assert_cached(plain, django_assert_num_queries, expected)
        # And the locking query never takes the plain query's entry, even where
        # (SQLite) the SQL of both is the same text.
        assert_not_cached(locked, django_assert_num_queries, expected)


def test_select_for_update_sql_on_sqlite_is_plain(books):
    if connection.features.has_select_for_update:
        pytest.skip("only SQLite compiles select_for_update to plain SQL")
    locked = str(Book.objects.select_for_update().filter(status=0).query)
    assert locked == str(Book.objects.filter(status=0).query)


# -- volatile SQL ------------------------------------------------------------------


def test_order_by_random_not_cached(books, django_assert_num_queries):
    assert_not_cached(
        lambda: titles(Book.objects.order_by("?")), django_assert_num_queries, ALL_TITLES
    )
    assert_cached(
        lambda: titles(Book.objects.order_by("pk")), django_assert_num_queries, ALL_TITLES
    )


def test_filter_on_now_not_cached(books, django_assert_num_queries):
    assert_not_cached(
        lambda: titles(Book.objects.filter(published__lt=Now())),
        django_assert_num_queries,
        ALL_TITLES,
    )
    fixed = datetime(2030, 1, 1, tzinfo=UTC)
    assert_cached(
        lambda: titles(Book.objects.filter(published__lt=fixed)),
        django_assert_num_queries,
        ALL_TITLES,
    )


def test_annotate_now_not_cached(books, django_assert_num_queries):
    def read():
        return sorted((b.title, b.now > b.published) for b in Book.objects.annotate(now=Now()))

    expected = [(t, True) for t in ALL_TITLES]
    assert_not_cached(read, django_assert_num_queries, expected)


def test_annotate_random_not_cached(books, django_assert_num_queries):
    def read():
        return sorted(
            (b.title, isinstance(b.r, int | float)) for b in Book.objects.annotate(r=Random())
        )

    expected = [(t, True) for t in ALL_TITLES]
    assert_not_cached(read, django_assert_num_queries, expected)
    # Control: a constant annotation is cached.
    assert_cached(
        lambda: sorted(Book.objects.annotate(r=Value(1)).values_list("title", "r")),
        django_assert_num_queries,
        [(t, 1) for t in ALL_TITLES],
    )


def test_random_filter_not_cached(books, django_assert_num_queries):
    def read():
        return Book.objects.annotate(r=Random()).filter(r__gte=-(2**63)).count()

    assert_not_cached(read, django_assert_num_queries, 5)


def test_explain_not_cached(books, django_assert_num_queries):
    qs = Book.objects.filter(status=1)
    plans = []
    for _ in range(2):
        with django_assert_num_queries(1):
            plans.append(qs.explain())
    assert plans[0] == plans[1] and isinstance(plans[0], str)
    # Control: the query itself is cached, and explain() never reads its entry.
    assert_cached(
        lambda: titles(Book.objects.filter(status=1)),
        django_assert_num_queries,
        ["Book 1", "Book 3"],
    )
    with django_assert_num_queries(1):
        assert qs.explain() == plans[0]


def test_raw_never_cached(books, counts, django_assert_num_queries):
    def read():
        return sorted(b.title for b in Book.objects.raw("SELECT * FROM testapp_book"))

    assert_not_cached(read, django_assert_num_queries, ALL_TITLES)
    assert counts("testapp.Book").get("vetoed", 0) == 0  # never even considered


# -- SQL we did not write: extra() and RawSQL -----------------------------------------------


def _extra_where(base):
    return titles(base.extra(where=["status = %s"], params=[1]))


def _extra_select(base):
    return sorted(base.extra(select={"half": "status * 1"}).values_list("title", "half"))


def _extra_tables(base):
    return titles(
        base.extra(
            tables=["testapp_review"],
            where=["testapp_review.book_id = testapp_book.id", "testapp_review.score >= 3"],
        )
    )


def _extra_order_by(base):
    return list(base.extra(order_by=["-title"]).values_list("title", flat=True))


def _rawsql_annotation(base):
    best = RawSQL("SELECT MAX(score) FROM testapp_review WHERE book_id = testapp_book.id", [])
    return sorted(base.annotate(best=best).values_list("title", "best"))


def _rawsql_filter(base):
    return titles(
        base.filter(id__in=RawSQL("SELECT book_id FROM testapp_review WHERE score >= %s", [3]))
    )


def _rawsql_order_by(base):
    return list(base.order_by(RawSQL("title", []).desc()).values_list("title", flat=True))


def _rawsql_in_subquery(base):
    reviews = Review.objects.filter(score__gte=RawSQL("%s", [3]))
    return titles(base.filter(id__in=reviews.values("book_id")))


def _extra_in_exists(base):
    reviews = Review.objects.filter(book=OuterRef("pk")).extra(where=["score >= 3"])
    return titles(base.filter(Exists(reviews)))


def _rawsql_in_annotation_subquery(base):
    best = (
        Review.objects.filter(book=OuterRef("pk"))
        .annotate(s=RawSQL("score * 1", []))
        .values("s")[:1]
    )
    return sorted(base.annotate(best=Subquery(best)).values_list("title", "best"))


@pytest.mark.parametrize(
    "read",
    [
        _extra_where,
        _extra_select,
        _extra_tables,
        _extra_order_by,
        _rawsql_annotation,
        _rawsql_filter,
        _rawsql_order_by,
        _rawsql_in_subquery,
        _extra_in_exists,
        _rawsql_in_annotation_subquery,
    ],
)
def test_raw_sql_not_cached_unless_asked(books, read, django_assert_num_queries):
    expected = read(Book.objects.nocache())
    assert_not_cached(lambda: read(Book.objects.all()), django_assert_num_queries, expected)
    assert_cached(lambda: read(Book.objects.cache()), django_assert_num_queries, expected)


def test_extra_where_over_a_view_never_served_stale(books, django_assert_num_queries):
    """Why raw SQL is vetoed: its tables may hide behind a view no write names."""
    view = "testapp_author_names_plain_v"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE VIEW {view} AS SELECT id, name FROM testapp_author")
    try:

        def read():
            return titles(
                Book.objects.extra(
                    where=[f"author_id IN (SELECT id FROM {view} WHERE name = %s)"], params=["Ann"]
                )
            )

        assert read() == ["Book 0", "Book 1", "Book 2"]
        Author.objects.filter(name="Ann").update(name="Annie")  # writes testapp_author only
        with django_assert_num_queries(1):
            assert read() == []
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP VIEW {view}")


def test_same_reads_without_raw_sql_are_cached(books, django_assert_num_queries):
    """Controls for the test above: nothing else in those queries vetoes them."""

    def reads(base):
        return (
            titles(base.filter(status=1)),
            titles(base.filter(reviews__score__gte=3)),
            titles(base.filter(id__in=Review.objects.filter(score__gte=3).values("book_id"))),
            titles(base.filter(Exists(Review.objects.filter(book=OuterRef("pk"), score__gte=3)))),
        )

    expected = reads(Book.objects.nocache())
    with django_assert_num_queries(4):
        assert reads(Book.objects.all()) == expected
    with django_assert_num_queries(0):
        assert reads(Book.objects.all()) == expected


def test_rawsql_nested_in_expression_not_cached(books, django_assert_num_queries):
    def read():
        bump = F("price") + RawSQL("%s", [1])
        return sorted(Book.objects.annotate(p=bump).values_list("title", flat=True))

    assert_not_cached(read, django_assert_num_queries, ALL_TITLES)


# -- IGNORE_TABLES ---------------------------------------------------------------------


def test_ignore_tables(books, django_assert_num_queries):
    Tag.objects.create(name="sf").books.add(books[0])

    def tag_names():
        return list(Tag.objects.values_list("name", flat=True))

    def tagged_books():
        return titles(Book.objects.filter(tags__name="sf"))

    def plain_books():
        return titles(Book.objects.filter(status=0))

    # Control: with the default list, Tag queries are cached.
    assert_cached(tag_names, django_assert_num_queries, ["sf"])
    ignore = [
        *settings.QUERYSTASH.get("IGNORE_TABLES", ["django_session", "django_migrations"]),
        "testapp_tag",
    ]
    with qs_settings(IGNORE_TABLES=ignore):
        assert_not_cached(tag_names, django_assert_num_queries, ["sf"])
        assert_not_cached(tagged_books, django_assert_num_queries, ["Book 0"])  # joins the tag
        assert_cached(plain_books, django_assert_num_queries, ["Book 0", "Book 2", "Book 4"])
        # .cache() does not override the ignore list
        assert_not_cached(
            lambda: list(Tag.objects.cache().values_list("name", flat=True)),
            django_assert_num_queries,
            ["sf"],
        )


# -- unmanaged models ------------------------------------------------------------------------


VIEW = "testapp_author_names_v"


@contextmanager
def unmanaged_view_model():
    """An unmanaged model over a real database view of the author table."""
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE VIEW {VIEW} AS SELECT id, name FROM testapp_author")
    model = type(
        "AuthorNamesView",
        (models.Model,),
        {
            "__module__": __name__,
            "name": models.CharField(max_length=100),
            "Meta": type("Meta", (), {"managed": False, "db_table": VIEW, "app_label": "testapp"}),
        },
    )
    try:
        # Rebuild the runtime so it knows the new model and its table.
        with override_settings(QUERYSTASH=dict(settings.QUERYSTASH)):
            yield model
    finally:
        del apps.all_models["testapp"][model._meta.model_name]
        apps.clear_cache()
        _runtime.rebuild()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP VIEW {VIEW}")


def test_unmanaged_view_not_cached_unless_asked(books, django_assert_num_queries):
    with unmanaged_view_model() as view:

        def read(base):
            return sorted(base.values_list("name", flat=True))

        assert_not_cached(
            lambda: read(view.objects.all()), django_assert_num_queries, ["Ann", "Bob"]
        )
        assert_cached(lambda: read(view.objects.cache()), django_assert_num_queries, ["Ann", "Bob"])
        # Control: the managed model over the underlying table is cached.
        assert_cached(lambda: read(Author.objects.all()), django_assert_num_queries, ["Ann", "Bob"])


def test_unmanaged_model_over_a_managed_table_is_cached(books, django_assert_num_queries):
    """AuthorView is unmanaged but its db_table is the author table itself,
    which Author writes name: the veto is for tables no managed model writes
    (views), so AuthorView is cached like Author, and kept fresh by its writes."""

    def read():
        return sorted(AuthorView.objects.values_list("name", flat=True))

    assert_cached(read, django_assert_num_queries, ["Ann", "Bob"])
    Author.objects.filter(name="Bob").update(name="Rob")
    with django_assert_num_queries(1):
        assert read() == ["Ann", "Rob"]
    with django_assert_num_queries(0):
        assert read() == ["Ann", "Rob"]
    assert sorted(AuthorView.objects.nocache().values_list("name", flat=True)) == ["Ann", "Rob"]


def test_unmanaged_model_fresh_after_write_to_its_table(books, django_assert_num_queries):
    def read():
        return sorted(AuthorView.objects.cache().values_list("name", flat=True))

    assert_cached(read, django_assert_num_queries, ["Ann", "Bob"])
    Author.objects.create(name="Cy")
    with django_assert_num_queries(1):
        assert read() == ["Ann", "Bob", "Cy"]


# -- switched off -----------------------------------------------------------------------------


def test_enabled_false_caches_nothing(books, django_assert_num_queries):
    with qs_settings(ENABLED=False):
        assert_not_cached(lambda: titles(Book.objects.all()), django_assert_num_queries, ALL_TITLES)
        assert_not_cached(
            lambda: titles(Book.objects.cache()), django_assert_num_queries, ALL_TITLES
        )
    assert_cached(lambda: titles(Book.objects.all()), django_assert_num_queries, ALL_TITLES)
