"""A cached read may read only relations whose writes querystash sees.

Temporary tables, views and tables no model maps, tables of another schema and
functions selecting from them change without a write querystash can tie to
them: a read of one is never cached, whatever known table it also joins. Next
to each, the controls: the same shapes over known tables, and ordinary ORM
reads, are still cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager

import pytest
from django.db import connection
from django.db.models import (
    BooleanField,
    Count,
    Exists,
    Expression,
    F,
    FilteredRelation,
    Func,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    Subquery,
)
from django.db.models.expressions import RawSQL
from django.db.models.sql.datastructures import Join

from querystash import _relations, _runtime
from querystash.events import QueryInfo
from tests.testapp.models import Author, Book, Review, Tag

pytestmark = pytest.mark.django_db(transaction=True)

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="a PostgreSQL feature SQLite does not have"
)


@pytest.fixture
def books():
    ann = Author.objects.create(name="Ann")
    result = [Book.objects.create(title=f"Book {i}", author=ann) for i in range(4)]
    return result


def sql(*statements: str, params=()) -> None:
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement, params or None)


@contextmanager
def relation(create: str, drop: str):
    sql(create)
    try:
        yield
    finally:
        sql(drop)


def titles(qs) -> list[str]:
    return sorted(qs.values_list("title", flat=True))


def fill(table: str, books) -> None:
    """Replace ``table``'s rows: raw SQL naming no known table, as
    django-model-utils' JoinQueryset.join() fills its temporary table."""
    sql(f"DELETE FROM {table}")
    for book in books:
        sql(f"INSERT INTO {table} (book_id) VALUES (%s)", params=[book.pk])


def vetoed() -> int:
    return _runtime.current.stats.totals().get("vetoed", 0)


def hits() -> int:
    return _runtime.current.stats.totals().get("hits", 0)


def assert_follows(table: str, read: Callable[[], object], books, nq,
                   expect: Callable[[list], object] | None = None, queries: int = 1) -> None:
    """Each read returns what ``table`` holds now: never cached, so never stale.
    ``expect(chosen books)``: the right answer (default: their sorted titles)."""
    expect = expect or (lambda chosen: sorted(b.title for b in chosen))
    before = vetoed()
    for chosen in ([books[0]], [books[1], books[2]], [books[3]]):
        fill(table, chosen)
        with nq(queries):
            assert read() == expect(chosen)
    assert vetoed() - before == 3
    assert hits() == 0


# -- temporary tables (the JoinQueryset shape) ---------------------------------


@pytest.fixture
def temp_stuff():
    with relation(
        "CREATE TEMPORARY TABLE temp_stuff (book_id integer)", "DROP TABLE temp_stuff"
    ):
        yield "temp_stuff"


def joined_like_join_queryset(qs):
    """What django-model-utils' JoinQueryset.join() does: a Join to the
    temporary table in the query's alias_map."""
    qs = qs._chain()
    query = qs.query
    query.join(
        Join(
            table_name="temp_stuff",
            parent_alias=query.get_initial_alias(),
            table_alias=None,
            join_type="INNER JOIN",
            join_field=Book._meta.get_field("reviews"),  # book.id = temp_stuff.book_id
            nullable=False,
        ),
        reuse=None,
    )
    return qs


class InTempStuff(Expression):
    """An expression class of a project's own, writing its own SQL."""

    output_field = BooleanField()

    def as_sql(self, compiler, connection):
        book = connection.ops.quote_name("testapp_book")
        return f"{book}.id IN (SELECT book_id FROM temp_stuff)", []


TEMP_READS = {
    "alias_map_join": lambda: titles(joined_like_join_queryset(Book.objects.cache())),
    "extra_tables": lambda: titles(
        Book.objects.cache().extra(
            tables=["temp_stuff"], where=["temp_stuff.book_id = testapp_book.id"]
        )
    ),
    "extra_where": lambda: titles(
        Book.objects.cache().extra(where=["id IN (SELECT book_id FROM temp_stuff)"])
    ),
    "rawsql_filter": lambda: titles(
        Book.objects.cache().filter(id__in=RawSQL("SELECT book_id FROM temp_stuff", []))
    ),
    "rawsql_annotation": lambda: titles(
        Book.objects.cache()
        .annotate(n=RawSQL("SELECT COUNT(*) FROM temp_stuff t WHERE t.book_id = testapp_book.id",
                           [], output_field=IntegerField()))
        .filter(n__gt=0)
    ),
    "extra_select": lambda: sorted(
        title
        for title, n in Book.objects.cache()
        .extra(select={"n": "SELECT COUNT(*) FROM temp_stuff WHERE book_id = testapp_book.id"})
        .values_list("title", "n")
        if n
    ),
    "union": lambda: sorted(
        Book.objects.cache().filter(pk=-1).values_list("title", flat=True).union(
            Book.objects.extra(tables=["temp_stuff"],
                               where=["temp_stuff.book_id = testapp_book.id"])
            .values_list("title", flat=True)
        )
    ),
    "annotation_subquery": lambda: sorted(
        title for title, flagged in Book.objects.cache().annotate(flagged=Subquery(
            Review.objects.filter(book=OuterRef("pk"))
            .extra(where=["book_id IN (SELECT book_id FROM temp_stuff)"])
            .values("book_id")[:1]
        )).values_list("title", "flagged") if flagged
    ),
    "custom_expression": lambda: titles(Book.objects.cache().filter(InTempStuff())),
    "func_template": lambda: titles(Book.objects.cache().annotate(flagged=Func(
        F("id"), template="%(expressions)s IN (SELECT book_id FROM temp_stuff)",
        output_field=BooleanField(),
    )).filter(flagged=True)),
    "filtered_relation": lambda: titles(Book.objects.cache().annotate(flagged=FilteredRelation(
        "reviews", condition=Q(reviews__book_id__in=RawSQL("SELECT book_id FROM temp_stuff", []))
    )).filter(flagged__isnull=False)),
}


@pytest.mark.parametrize("shape", list(TEMP_READS))
def test_temporary_table_read_is_never_cached(books, temp_stuff, shape,
                                              django_assert_num_queries):
    for book in books:
        Review.objects.create(book=book, score=1)
    assert_follows(temp_stuff, TEMP_READS[shape], books, django_assert_num_queries)


def test_temporary_table_in_a_subquery_is_never_cached(books, temp_stuff,
                                                       django_assert_num_queries):
    """Deep in an Exists() subquery, OR-ed with one over known tables only."""

    def read():
        flagged = Review.objects.filter(
            book=OuterRef("pk"), book_id__in=RawSQL("SELECT book_id FROM temp_stuff", [])
        )
        plain = Review.objects.filter(book=OuterRef("pk"), score__gt=1)
        return titles(Book.objects.cache().filter(Exists(plain) | Exists(flagged)))

    for book in books:
        Review.objects.create(book=book, score=1)
    assert_follows(temp_stuff, read, books, django_assert_num_queries)


def test_temporary_table_under_count_and_prefetch(books, temp_stuff, django_assert_num_queries):
    for book in books:
        Review.objects.create(book=book, score=1)
    in_temp = RawSQL("SELECT book_id FROM temp_stuff", [])
    # count() over a DISTINCT subquery: the temporary table is in the inner query
    assert_follows(
        temp_stuff,
        lambda: Book.objects.cache().filter(id__in=in_temp).distinct().count(),
        books, django_assert_num_queries, expect=len,
    )

    # a prefetch query reading it: the books are cached, the prefetch never
    def prefetched():
        reviews = Review.objects.filter(book_id__in=in_temp)
        qs = Book.objects.cache().prefetch_related(Prefetch("reviews", queryset=reviews))
        return sorted(b.title for b in qs if b.reviews.all())

    before = vetoed()
    for chosen in ([books[0]], [books[1], books[2]]):
        fill(temp_stuff, chosen)
        assert prefetched() == sorted(b.title for b in chosen)
    assert vetoed() - before == 2
    assert hits() == 1  # the second books query


def test_positive_control_old_rule_serves_stale_rows(books, temp_stuff, monkeypatch,
                                                    django_assert_num_queries):
    """Planting the old rule back ("cache it when it names any known table")
    makes the temporary-table read serve the first rows again: the test above
    would catch it."""
    finder = _runtime.current.finder
    monkeypatch.setattr(
        _runtime.current.relations, "read",
        lambda sql, query=None, compiler=None: _relations.Relations(finder.tables(sql)),
    )
    read = TEMP_READS["extra_tables"]
    fill(temp_stuff, [books[0]])
    assert read() == ["Book 0"]
    fill(temp_stuff, [books[1], books[2]])
    with django_assert_num_queries(0):
        assert read() == ["Book 0"]  # wrong: temp_stuff holds books 1 and 2 now
    assert hits() == 1
    monkeypatch.undo()
    with django_assert_num_queries(1):
        assert read() == ["Book 1", "Book 2"]


# -- views and tables no model maps -------------------------------------------


@pytest.fixture
def good_reviews_view():
    """A view over a known table, but named by no model: a write to
    testapp_review changes it without naming it."""
    with relation(
        "CREATE VIEW qs_good_reviews AS SELECT book_id FROM testapp_review WHERE score >= 3",
        "DROP VIEW qs_good_reviews",
    ):
        yield "qs_good_reviews"


@pytest.mark.parametrize("shape", ["extra_tables", "rawsql"])
def test_unmodelled_view_is_never_cached(books, good_reviews_view, shape,
                                         django_assert_num_queries):
    def read():
        base = Book.objects.cache()
        if shape == "extra_tables":
            return titles(base.extra(
                tables=[good_reviews_view],
                where=[f"{good_reviews_view}.book_id = testapp_book.id"],
            ).distinct())
        return titles(base.filter(id__in=RawSQL(f"SELECT book_id FROM {good_reviews_view}", [])))

    before = vetoed()
    assert read() == []
    Review.objects.create(book=books[2], score=5)  # names testapp_review only
    with django_assert_num_queries(1):
        assert read() == ["Book 2"]
    assert vetoed() - before == 2
    assert hits() == 0


@pytest.fixture
def unmapped_table():
    with relation("CREATE TABLE qs_unmapped (book_id integer)", "DROP TABLE qs_unmapped"):
        yield "qs_unmapped"


@pytest.mark.parametrize("shape", ["extra_tables", "rawsql_filter", "extra_where"])
def test_table_no_model_maps_is_never_cached(books, unmapped_table, shape,
                                             django_assert_num_queries):
    reads = {
        "extra_tables": lambda: titles(Book.objects.cache().extra(
            tables=[unmapped_table], where=[f"{unmapped_table}.book_id = testapp_book.id"])),
        "rawsql_filter": lambda: titles(Book.objects.cache().filter(
            id__in=RawSQL(f'SELECT "book_id" FROM "{unmapped_table}"', []))),
        "extra_where": lambda: titles(Book.objects.cache().extra(
            where=[f"EXISTS (SELECT 1 FROM testapp_author a, {unmapped_table} u "
                   f"WHERE u.book_id = testapp_book.id)"])),
    }
    assert_follows(unmapped_table, reads[shape], books, django_assert_num_queries)


# -- PostgreSQL: other schemas, set-returning functions ------------------------


@postgres_only
def test_table_of_another_schema_is_never_cached(books, django_assert_num_queries):
    sql("CREATE SCHEMA qs_elsewhere",
        "CREATE TABLE qs_elsewhere.flags (book_id integer)")
    try:
        reads = [
            lambda: titles(Book.objects.cache().filter(
                id__in=RawSQL("SELECT book_id FROM qs_elsewhere.flags", []))),
            lambda: titles(Book.objects.cache().extra(
                tables=['"qs_elsewhere"."flags"'],
                where=['"qs_elsewhere"."flags".book_id = testapp_book.id'])),
        ]
        for read in reads:
            assert_follows("qs_elsewhere.flags", read, books, django_assert_num_queries)
    finally:
        sql("DROP SCHEMA qs_elsewhere CASCADE")


@postgres_only
def test_function_selecting_from_an_unknown_table_is_never_cached(
    books, unmapped_table, django_assert_num_queries
):
    sql(f"CREATE FUNCTION qs_flagged() RETURNS SETOF integer AS "
        f"'SELECT book_id FROM {unmapped_table}' LANGUAGE sql STABLE",
        f"CREATE FUNCTION qs_is_flagged(bigint) RETURNS boolean AS "
        f"'SELECT EXISTS (SELECT 1 FROM {unmapped_table} WHERE book_id = $1)' "
        f"LANGUAGE sql STABLE")
    try:
        reads = [
            # a set-returning function in FROM
            lambda: titles(Book.objects.cache().filter(
                id__in=RawSQL("SELECT * FROM qs_flagged()", []))),
            # a function called in an expression
            lambda: titles(Book.objects.cache().extra(where=["qs_is_flagged(id)"])),
            # the same through the ORM: Func naming its own function
            lambda: titles(Book.objects.cache().annotate(
                f=Func(F("id"), function="qs_is_flagged", output_field=BooleanField())
            ).filter(f=True)),
        ]
        for read in reads:
            assert_follows(unmapped_table, read, books, django_assert_num_queries)
    finally:
        sql("DROP FUNCTION qs_flagged()", "DROP FUNCTION qs_is_flagged(bigint)")


@postgres_only
def test_generate_series_reads_no_table_and_is_cached(books, django_assert_num_queries,
                                                      counts):
    low, high = books[1].pk, books[2].pk

    def read():
        return titles(Book.objects.cache().filter(
            id__in=RawSQL("SELECT * FROM generate_series(%s, %s)", [low, high])))

    with django_assert_num_queries(1):
        assert read() == ["Book 1", "Book 2"]
    with django_assert_num_queries(0):
        assert read() == ["Book 1", "Book 2"]
    Book.objects.filter(pk=low).update(title="Renamed")
    with django_assert_num_queries(1):
        assert read() == ["Book 2", "Renamed"]
    assert counts("testapp.Book").get("vetoed", 0) == 0


# -- controls: known tables stay cached -----------------------------------------


def _known_raw_reads():
    return [
        lambda b: titles(b.extra(tables=["testapp_review"],
                                 where=["testapp_review.book_id = testapp_book.id"])),
        lambda b: titles(b.filter(id__in=RawSQL(
            'SELECT "book_id" FROM "testapp_review" r JOIN testapp_book bk ON bk.id = r.book_id '
            "WHERE r.score >= %s", [3]))),
        lambda b: titles(b.extra(where=[
            "EXISTS (SELECT 1 FROM testapp_review WHERE testapp_review.book_id = testapp_book.id"
            " AND LOWER(testapp_book.title) LIKE %s)"], params=["book%"])),
        lambda b: sorted(b.extra(select={
            "best": "SELECT MAX(score) FROM testapp_review WHERE book_id = testapp_book.id"
        }).values_list("title", "best")),
        lambda b: titles(b.annotate(low=Func(F("title"), function="LOWER")).filter(
            low__startswith="book")),
    ]


@pytest.mark.parametrize("index", range(len(_known_raw_reads())))
def test_raw_sql_over_known_tables_is_still_cached(books, index, django_assert_num_queries,
                                                   counts):
    read = _known_raw_reads()[index]
    Review.objects.create(book=books[1], score=4)
    expected = read(Book.objects.nocache())
    with django_assert_num_queries(1):
        assert read(Book.objects.cache()) == expected
    with django_assert_num_queries(0):
        assert read(Book.objects.cache()) == expected
    assert counts("testapp.Book").get("vetoed", 0) == 0
    # and invalidated by writes to the tables it names
    Review.objects.create(book=books[3], score=5)
    assert read(Book.objects.cache()) == read(Book.objects.nocache())


def test_orm_reads_are_still_cached(books, django_assert_num_queries, counts):
    tag = Tag.objects.create(name="sf")
    tag.books.add(books[0], books[1])
    Review.objects.create(book=books[0], score=5)

    reads = [
        lambda: titles(Book.objects.filter(author__name="Ann", reviews__score__gte=1)),
        lambda: titles(Book.objects.filter(Exists(Review.objects.filter(book=OuterRef("pk"))))),
        lambda: sorted(Book.objects.annotate(best=Subquery(
            Review.objects.filter(book=OuterRef("pk")).values("score")[:1]
        )).values_list("title", "best")),
        lambda: sorted(Book.objects.filter(pk=books[0].pk).values_list("title", flat=True)
                       .union(Book.objects.filter(pk=books[3].pk).values_list("title", flat=True))),
        lambda: [(b.title, b.author.name) for b in Book.objects.select_related("author")
                 .order_by("pk")],
        lambda: [(b.title, [t.name for t in b.tags.all()])
                 for b in Book.objects.prefetch_related("tags").order_by("pk")],
        lambda: [(b.title, [r.score for r in b.reviews.all()])
                 for b in Book.objects.prefetch_related(Prefetch(
                     "reviews", queryset=Review.objects.filter(score__gte=1))).order_by("pk")],
        lambda: titles(Book.objects.filter(tags__name="sf")),
        lambda: titles(Tag.objects.get(name="sf").books.all()),
        lambda: titles(Book.objects.annotate(
            good=FilteredRelation("reviews", condition=Q(reviews__score__gte=3))
        ).filter(good__isnull=False)),
        lambda: Book.objects.values("author").annotate(n=Count("pk")).distinct().count(),
    ]
    first = [read() for read in reads]
    before = hits()
    with django_assert_num_queries(0):
        assert [read() for read in reads] == first
    assert hits() - before >= len(reads)
    assert counts("testapp.Book").get("vetoed", 0) == 0


# -- the reader itself ----------------------------------------------------------


def test_reason_is_kept_and_logged(books, temp_stuff, caplog):
    qs = Book.objects.cache().extra(tables=["temp_stuff"],
                                    where=["temp_stuff.book_id = testapp_book.id"])
    compiler = qs.query.get_compiler(using="default")
    text, _ = compiler.as_sql()
    with caplog.at_level(logging.DEBUG, logger="querystash"):
        relations = _runtime.current.relations.read(text, qs.query, compiler)
    assert "temp_stuff" in relations.unwatched
    assert any("temp_stuff" in r.getMessage() for r in caplog.records)


def test_same_sql_is_read_once(books, monkeypatch, django_assert_num_queries):
    """The hit path pays a dict lookup, not a walk of the query."""
    calls = []
    original = _relations._Walk.run

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(_relations._Walk, "run", counting)
    for _ in range(3):
        titles(Book.objects.filter(title__startswith="Book").exclude(pk=0))
    assert len(calls) == 1


def test_a_query_the_reader_cannot_walk_is_run_uncached(books, monkeypatch, counts,
                                                       django_assert_num_queries):
    def broken(self, query, stack):
        raise RuntimeError("a query shape nobody foresaw")

    monkeypatch.setattr(_relations._Walk, "_query", broken)
    for _ in range(2):
        with django_assert_num_queries(1):
            assert titles(Book.objects.filter(title="Book 1")) == ["Book 1"]
    assert counts("testapp.Book")["vetoed"] == 2


def test_sql_without_a_query_is_read_as_text():
    """No Query object (info.query None): the SQL text itself is read, as
    conservatively as a RawSQL fragment."""
    reader = _runtime.current.relations
    known = reader.read('SELECT "testapp_book"."id" FROM "testapp_book" INNER JOIN '
                        '"testapp_author" ON ("testapp_book"."author_id" = "testapp_author"."id")')
    assert known.unwatched is None
    assert known.tables == {"testapp_book", "testapp_author"}
    for unknown in ("SELECT * FROM testapp_book, temp_stuff",
                    "SELECT * FROM testapp_book WHERE id IN (SELECT book_id FROM other.t)",
                    "SELECT my_func(id) FROM testapp_book"):
        assert reader.read(unknown).unwatched is not None, unknown
    # and the default eligibility check keeps working without a query
    info = QueryInfo("SELECT 1 FROM testapp_book", (), "default", "multi", "fetch",
                     frozenset({"testapp_book"}))
    assert _runtime.current.eligible(info)


@pytest.mark.parametrize(
    ("fragment", "reads"),
    [
        ("SELECT MAX(score) FROM testapp_review WHERE book_id = testapp_book.id",
         {"testapp_review"}),
        ('EXTRACT(year FROM "testapp_book"."published") = %s', set()),
        ("a IS DISTINCT FROM b", set()),
        ("SELECT * FROM (SELECT id FROM testapp_book) AS s", {"testapp_book"}),
        ("SELECT 1 FROM testapp_book b LEFT JOIN testapp_review r ON r.book_id = b.id",
         {"testapp_book", "testapp_review"}),
        ("title = 'FROM temp_stuff' AND 1 = 1", set()),  # a string, not SQL
        ("SELECT * FROM generate_series(1, 3)", set()),
        ("SELECT 1 FROM ((testapp_book))", {"testapp_book"}),
        ("SELECT 1 FROM (TABLE testapp_book) t", {"testapp_book"}),
        ("SELECT 1 FROM (SELECT 1 FROM testapp_book) s, (VALUES (1)) v", {"testapp_book"}),
    ],
)
def test_fragments_over_known_tables(fragment, reads):
    from querystash._sqlscan import scan

    assert scan(fragment, _runtime.current.relations.known) == (reads, None)


@pytest.mark.parametrize(
    "fragment",
    [
        "SELECT 1 FROM testapp_book b JOIN testapp_review r ON r.book_id = b.id, temp_stuff",
        "(TABLE temp_stuff)",
        "SELECT * FROM public.testapp_book",
        'SELECT * FROM "TestApp_Book"',  # a different relation on PostgreSQL
        "SELECT * FROM my_rows(1)",
        "pg_catalog.my_func(id)",
        '"quoted_func"(id)',
        "x > 0; DELETE FROM testapp_book",
        r"title = 'it\' FROM temp_stuff --'",  # where it ends depends on the database
        "title = $$ FROM temp_stuff $$",
        "title = 'unterminated",
        "WITH t AS (SELECT 1) SELECT * FROM t",  # a CTE name: unknown, refused
        "SELECT * FROM",
        "SELECT 1 FROM (temp_stuff)",  # a parenthesised FROM item
        "SELECT 1 FROM (testapp_book CROSS JOIN temp_stuff)",
        "SELECT * FROM ROWS FROM (my_rows())",
        "SELECT 1 FROM testapp_book@remote",
        "SELECT 1 FROM /* a comment */ temp_stuff",
        "SELECT 1 FROM testapp_book, LATERAL my_rows(testapp_book.id)",
    ],
)
def test_fragments_refused(fragment):
    from querystash._sqlscan import scan

    _tables, reason = scan(fragment, _runtime.current.relations.known)
    assert reason, fragment
