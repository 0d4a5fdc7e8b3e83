"""Every write path invalidates the cached reads it affects.

The pattern of each test: prime a cached read (the second run is a hit), write,
then the next read is a miss and equals what the database holds (the same read
with ``.nocache()``), which differs from the primed rows (so the test can't pass
by reading nothing). Precision tests show that an unrelated write leaves a
cached read a hit, so the freshness checks aren't trivially satisfied.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection, connections, models, transaction
from django.db.models import Count, Exists, OuterRef, Subquery, Sum

from tests.testapp.models import (
    Author,
    AuthorProxy,
    Book,
    Club,
    ClubMember,
    Place,
    Restaurant,
    Review,
    Tag,
)

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRES = connection.vendor == "postgresql"


# -- helpers ------------------------------------------------------------------------------


def snap(value):
    """Rows as plain comparable values (model instances compare by pk only)."""
    if isinstance(value, models.Model):
        return tuple((f.attname, getattr(value, f.attname)) for f in value._meta.concrete_fields)
    if isinstance(value, (models.QuerySet, list, tuple)):
        return [snap(v) for v in value]
    return value


class Probe:
    """A read run through the cache (``fn(Model.objects)``) and, for the
    truth, straight from the database (``fn(Model.objects.nocache())``)."""

    def __init__(self, counts, model, fn, label=None, truth=None):
        self.counts = counts
        self.model = model
        self.fn = fn
        self.truth = truth
        self.label = label or model._meta.label
        self.primed = None

    def _n(self, field):
        return self.counts(self.label).get(field, 0)

    def cached(self):
        return snap(self.fn(self.model.objects))

    def db(self):
        if self.truth is not None:
            return snap(self.truth())
        return snap(self.fn(self.model.objects.nocache()))

    def prime(self):
        first = self.cached()
        hits = self._n("hits")
        second = self.cached()
        assert self._n("hits") == hits + 1, "the second read should be a cache hit"
        assert second == first == self.db()
        self.primed = first
        return first

    def assert_fresh(self, changed=True):
        """The next cached read is not served from the old entry and equals the DB."""
        hits = self._n("hits")
        got = self.cached()
        truth = self.db()
        assert got == truth, f"stale read: cached {got!r} != database {truth!r}"
        assert self._n("hits") == hits, "served from the cache after a write to its tables"
        if changed:
            assert truth != self.primed, "the write did not change the rows; test is vacuous"
        return got

    def assert_hit(self):
        hits = self._n("hits")
        got = self.cached()
        assert self._n("hits") == hits + 1, "an unrelated write invalidated this read"
        assert got == self.primed == self.db()


@pytest.fixture
def probe(counts):
    def make(model, fn, label=None, truth=None):
        p = Probe(counts, model, fn, label, truth)
        p.prime()
        return p

    return make


@pytest.fixture
def data():
    alice = Author.objects.create(name="Alice", age=35)
    bob = Author.objects.create(name="Bob", age=50)
    b1 = Book.objects.create(title="One", author=alice, editor=bob, price=Decimal("5.00"))
    b2 = Book.objects.create(title="Two", author=bob, editor=alice, price=Decimal("7.50"))
    b3 = Book.objects.create(title="Three", author=alice, status=2)
    t1 = Tag.objects.create(name="red")
    t2 = Tag.objects.create(name="blue")
    b1.tags.add(t1)
    Review.objects.create(book=b1, score=3)
    Review.objects.create(book=b1, score=4)
    Review.objects.create(book=b2, score=5)
    return {"alice": alice, "bob": bob, "b1": b1, "b2": b2, "b3": b3, "t1": t1, "t2": t2}


def books(m):
    return m.order_by("pk").values_list("pk", "title", "author_id", "editor_id", "price", "status")


def reviews(m):
    return m.order_by("pk").values_list("pk", "book_id", "score")


def authors(m):
    return m.order_by("pk").values_list("pk", "name", "age")


def tags(m):
    return m.order_by("pk").values_list("pk", "name")


# -- save() ---------------------------------------------------------------------------------


def test_save_insert(data, probe):
    p = probe(Book, books)
    Book(title="Four", author=data["alice"]).save()
    p.assert_fresh()


def test_save_update(data, probe):
    p = probe(Book, books)
    b = data["b1"]
    b.title = "One, revised"
    b.save()
    p.assert_fresh()


def test_save_update_fields(data, probe):
    p = probe(Book, books)
    b = Book.objects.nocache().get(pk=data["b2"].pk)
    b.price = Decimal("99.00")
    b.save(update_fields=["price"])
    p.assert_fresh()


def test_save_force_insert(data, probe):
    p = probe(Author, authors)
    Author(name="Carol", age=20).save(force_insert=True)
    p.assert_fresh()


def test_create_invalidates_count_get_exists_aggregate(data, probe):
    count = probe(Book, lambda m: m.count())
    exists = probe(Book, lambda m: m.filter(title="Four").exists())
    total = probe(Book, lambda m: m.aggregate(total=Sum("price"))["total"])
    get = probe(Book, lambda m: m.get(pk=data["b1"].pk))
    Book.objects.create(title="Four", author=data["alice"], price=Decimal("1.00"))
    b1 = data["b1"]
    b1.title = "One!"
    b1.save()
    count.assert_fresh()
    exists.assert_fresh()
    total.assert_fresh()
    get.assert_fresh()


# -- delete() and its cascades --------------------------------------------------------------


def test_delete_cascade_reviews(data, probe):
    p_reviews = probe(Review, reviews)
    p_books = probe(Book, books)
    data["b1"].delete()
    p_reviews.assert_fresh()
    p_books.assert_fresh()
    assert not Review.objects.filter(book_id=data["b1"].pk).exists()


def test_delete_author_cascades_books_and_reviews(data, probe):
    p_reviews = probe(Review, lambda m: m.filter(book__author__name="Alice").values_list("pk"))
    p_books = probe(Book, books)
    data["alice"].delete()
    p_books.assert_fresh()
    p_reviews.assert_fresh()


def test_delete_set_null_editor(data, probe):
    p = probe(Book, lambda m: m.filter(pk=data["b2"].pk).values_list("pk", "editor_id"))
    p_related = probe(Book, lambda m: m.filter(editor__isnull=True).values_list("pk"))
    # Carol edits nothing and writes nothing: only SET_NULL touches testapp_book.
    carol = Author.objects.create(name="Carol")
    Book.objects.filter(pk=data["b3"].pk).update(editor=carol)
    p_related.assert_fresh()
    p_related.prime()
    # Deleting Alice cascades her books away and sets b2.editor to NULL.
    data["alice"].delete()
    assert Book.objects.nocache().get(pk=data["b2"].pk).editor_id is None
    p.assert_fresh()
    p_related.assert_fresh()


# -- QuerySet.update() / QuerySet.delete() ---------------------------------------------------


def test_queryset_update(data, probe):
    p = probe(Book, books)
    n = Book.objects.filter(author=data["alice"]).update(status=7)
    assert n == 2
    p.assert_fresh()


def test_queryset_update_with_f_and_join_filter(data, probe):
    p = probe(Book, books)
    Book.objects.filter(author__name="Bob").update(price=models.F("price") + 1)
    p.assert_fresh()


def test_queryset_delete_with_cascade(data, probe):
    p_reviews = probe(Review, reviews)
    p_books = probe(Book, books)
    Book.objects.filter(author=data["alice"]).delete()
    p_books.assert_fresh()
    p_reviews.assert_fresh()


def test_queryset_fast_delete(data, probe):
    # Review has no dependents and no signals: Django deletes it with one
    # DELETE ... WHERE, without fetching the rows first.
    p = probe(Review, reviews)
    deleted, by_model = Review.objects.filter(score__gte=4).delete()
    assert deleted == 2 and by_model == {"testapp.Review": 2}
    p.assert_fresh()


def test_delete_tag_removes_through_rows(data, probe):
    p = probe(Book, lambda m: m.filter(tags__name="red").values_list("pk"))
    p_tags = probe(Tag, lambda m: m.filter(books=data["b1"]).values_list("name"))
    Tag.objects.filter(name="red").delete()
    p.assert_fresh()
    p_tags.assert_fresh()


# -- bulk operations -------------------------------------------------------------------------


def test_bulk_create(data, probe):
    p = probe(Book, books)
    Book.objects.bulk_create([Book(title=f"Bulk {i}", author=data["bob"]) for i in range(5)])
    p.assert_fresh()


def test_bulk_create_ignore_conflicts(data, probe):
    p = probe(Tag, tags)
    Tag.objects.bulk_create([Tag(name="red"), Tag(name="green")], ignore_conflicts=True)
    p.assert_fresh()
    assert sorted(Tag.objects.nocache().values_list("name", flat=True)) == ["blue", "green", "red"]


def test_bulk_create_ignore_conflicts_all_conflicting_is_harmless(data, probe):
    p = probe(Tag, tags)
    Tag.objects.bulk_create([Tag(name="red"), Tag(name="blue")], ignore_conflicts=True)
    # Nothing changed; a (coarse) invalidation is allowed, a wrong answer is not.
    p.assert_fresh(changed=False)


def test_bulk_create_update_conflicts(data, probe):
    p = probe(Tag, tags)
    Tag.objects.bulk_create(
        [Tag(name="red"), Tag(name="yellow")],
        update_conflicts=True,
        unique_fields=["name"],
        update_fields=["name"],
    )
    p.assert_fresh()


def test_bulk_update(data, probe):
    p = probe(Book, books)
    b1, b2 = data["b1"], data["b2"]
    b1.title, b2.title = "Bulk one", "Bulk two"
    b1.status = b2.status = 9
    Book.objects.bulk_update([b1, b2], ["title", "status"])
    p.assert_fresh()


def test_get_or_create_creates(data, probe):
    p = probe(Author, authors)
    get = probe(Author, lambda m: m.filter(name="Dora").exists())
    obj, created = Author.objects.get_or_create(name="Dora", defaults={"age": 44})
    assert created
    p.assert_fresh()
    get.assert_fresh()


def test_get_or_create_gets_without_invalidating(data, probe, counts):
    p = probe(Author, authors)
    before = counts("").get("invalidations", 0)
    obj, created = Author.objects.get_or_create(name="Alice")
    assert not created and obj.pk == data["alice"].pk
    assert counts("").get("invalidations", 0) == before
    p.assert_hit()


def test_update_or_create_updates(data, probe):
    p = probe(Author, authors)
    obj, created = Author.objects.update_or_create(name="Bob", defaults={"age": 51})
    assert not created
    p.assert_fresh()


def test_update_or_create_creates(data, probe):
    p = probe(Author, authors)
    obj, created = Author.objects.update_or_create(name="Eve", defaults={"age": 29})
    assert created
    p.assert_fresh()


# -- many-to-many -----------------------------------------------------------------------------


def _m2m_probes(probe, data):
    b1 = data["b1"]
    return [
        probe(Tag, lambda m: m.filter(books=b1).order_by("name").values_list("name")),
        probe(Book, lambda m: m.filter(tags__name="blue").order_by("pk").values_list("pk")),
        probe(Book, lambda m: m.annotate(n=Count("tags")).order_by("pk").values_list("pk", "n")),
        # the related manager's own query
        probe(
            Tag,
            lambda m: [t.name for t in b1.tags.order_by("name")],
            truth=lambda: [t.name for t in b1.tags.nocache().order_by("name")],
        ),
    ]


@pytest.mark.parametrize(
    "change",
    ["add", "remove", "clear", "set"],
)
def test_m2m_forward(data, probe, change):
    b1, t2 = data["b1"], data["t2"]
    if change == "remove":
        b1.tags.add(t2)
    ps = _m2m_probes(probe, data)
    if change == "add":
        b1.tags.add(t2)
    elif change == "remove":
        b1.tags.remove(t2)
    elif change == "clear":
        b1.tags.clear()
    else:
        b1.tags.set([t2])
    for p in ps:
        p.assert_fresh(changed=False)
    assert any(p.db() != p.primed for p in ps)


@pytest.mark.parametrize("change", ["add", "remove", "clear", "set"])
def test_m2m_reverse(data, probe, change):
    b1, b2, t1 = data["b1"], data["b2"], data["t1"]
    ps = [
        probe(Book, lambda m: m.filter(tags=t1).order_by("pk").values_list("pk")),
        probe(Tag, lambda m: m.filter(books__title="Two").values_list("name")),
        probe(Book, lambda m: m.filter(tags__name="red").count()),
    ]
    if change == "add":
        t1.books.add(b2)
    elif change == "remove":
        t1.books.remove(b1)
    elif change == "clear":
        t1.books.clear()
    else:
        t1.books.set([b2])
    for p in ps:
        p.assert_fresh(changed=False)
    assert any(p.db() != p.primed for p in ps)


@pytest.mark.parametrize("change", ["add", "create", "remove", "clear", "set", "update_role"])
def test_m2m_custom_through(data, probe, change):
    club = Club.objects.create(name="Chess")
    alice, bob = data["alice"], data["bob"]
    club.members.add(alice, through_defaults={"role": "chair"})
    ps = [
        probe(Author, lambda m: m.filter(clubs=club).order_by("pk").values_list("pk", "name")),
        probe(Club, lambda m: m.filter(members__name="Bob").values_list("name")),
        probe(ClubMember, lambda m: m.order_by("pk").values_list("club_id", "author_id", "role")),
    ]
    if change == "add":
        club.members.add(bob, through_defaults={"role": "member"})
    elif change == "create":
        ClubMember.objects.create(club=club, author=bob)
    elif change == "remove":
        club.members.remove(alice)
    elif change == "clear":
        bob.clubs.add(club)
        ps[1].assert_fresh()
        club.members.clear()
    elif change == "set":
        bob.clubs.set([club])
    else:
        ClubMember.objects.filter(author=alice).update(role="treasurer")
    for p in ps:
        p.assert_fresh(changed=False)
    assert any(p.db() != p.primed for p in ps)


# -- raw SQL through a cursor -------------------------------------------------------------------


def test_raw_insert(data, probe):
    p = probe(Author, authors)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO testapp_author (name, age) VALUES (%s, %s)", ["Raw", 1])
    p.assert_fresh()


def test_raw_executemany_insert(data, probe):
    p = probe(Author, authors)
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO testapp_author (name, age) VALUES (%s, %s)", [["R1", 1], ["R2", 2]]
        )
    p.assert_fresh()


def test_raw_update(data, probe):
    p = probe(Book, books)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE testapp_book SET status = %s WHERE title = %s", [5, "One"])
    p.assert_fresh()


def test_raw_update_lowercase_quoted_and_commented(data, probe):
    p = probe(Book, books)
    with connection.cursor() as cursor:
        cursor.execute('/* a comment */ update "testapp_book" set status = 6')
    p.assert_fresh()


def test_raw_delete(data, probe):
    p = probe(Review, reviews)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM testapp_review WHERE score = %s", [5])
    p.assert_fresh()


@pytest.mark.skipif(not POSTGRES, reason="TRUNCATE is PostgreSQL's; SQLite has none")
def test_raw_truncate(data, probe):
    p = probe(Review, reviews)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE testapp_review")
    p.assert_fresh()


@pytest.mark.skipif(not POSTGRES, reason="TRUNCATE is PostgreSQL's; SQLite has none")
def test_raw_truncate_cascade(data, probe):
    p_books = probe(Book, books)
    p_reviews = probe(Review, reviews)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE testapp_book CASCADE")
    p_books.assert_fresh()
    # CASCADE empties the referencing tables too; their names aren't in the
    # statement, so the core must be conservative here.
    p_reviews.assert_fresh()


@pytest.mark.skipif(not POSTGRES, reason="SQLite has no SELECT ... FOR UPDATE")
def test_raw_select_for_update_is_not_a_write(data, probe, counts):
    p = probe(Book, books)
    before = counts("").get("invalidations", 0)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM testapp_book WHERE id = %s FOR UPDATE", [data["b1"].pk])
            cursor.fetchall()
    assert counts("").get("invalidations", 0) == before
    p.assert_hit()


def test_raw_select_is_not_a_write(data, probe, counts):
    p = probe(Book, books)
    before = counts("").get("invalidations", 0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, title FROM testapp_book ORDER BY id")
        cursor.fetchall()
        cursor.execute("WITH x AS (SELECT id FROM testapp_book) SELECT count(*) FROM x")
        cursor.fetchall()
    assert counts("").get("invalidations", 0) == before
    p.assert_hit()


def test_raw_cte_update(data, probe):
    p = probe(Book, books)
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH picked AS (SELECT id FROM testapp_book WHERE status = 2) "
            "UPDATE testapp_book SET title = 'CTE' WHERE id IN (SELECT id FROM picked)"
        )
    p.assert_fresh()


def test_raw_write_on_unknown_table_keeps_cached_reads(data, probe):
    p = probe(Book, books)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE qs_scratch (id integer PRIMARY KEY, v integer)")
        try:
            cursor.execute("ALTER TABLE qs_scratch ADD COLUMN w integer")
            cursor.execute("INSERT INTO qs_scratch (id, v, w) VALUES (1, 2, 3)")
            cursor.execute("UPDATE qs_scratch SET v = 5")
        finally:
            cursor.execute("DROP TABLE qs_scratch")
    p.assert_hit()


def test_ddl_naming_a_cached_table_invalidates_it(data, probe):
    Place.objects.create(name="Park")
    p = probe(Place, lambda m: m.order_by("pk").values_list("pk", "name"))
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE testapp_place ADD COLUMN qs_extra integer")
        try:
            p.assert_fresh(changed=False)
        finally:
            cursor.execute("ALTER TABLE testapp_place DROP COLUMN qs_extra")


def test_raw_unknowable_statement_invalidates_everything(data, probe):
    # A statement whose first word isn't known (here a PostgreSQL DO block /
    # SQLite REINDEX) can't be read for tables: everything is invalidated.
    p = probe(Book, books)
    with connection.cursor() as cursor:
        if POSTGRES:
            cursor.execute("DO $$ BEGIN UPDATE testapp_book SET status = 3; END $$")
        else:
            cursor.execute("REINDEX")
            cursor.execute("UPDATE testapp_book SET status = 3")
    p.assert_fresh()


@pytest.mark.skipif(not POSTGRES, reason="psycopg runs several statements in one execute()")
@pytest.mark.parametrize("sql", [
    'SELECT 1; DELETE FROM "testapp_review"',
    "SELECT 1 FROM testapp_book; DELETE FROM testapp_review WHERE score = 5",
    "SET search_path TO public; UPDATE testapp_review SET score = 0",
    "SELECT ';'; DELETE FROM testapp_review",  # the split cuts a literal: everything
])
def test_raw_write_after_another_statement(data, probe, sql):
    # The first statement reads; a later one in the same string writes.
    p = probe(Review, reviews)
    with connection.cursor() as cursor:
        cursor.execute(sql)
    p.assert_fresh()


def test_several_statements_classified_by_every_one():
    from querystash._sql import TableFinder

    finder = TableFinder(["t_a", "t_b"])
    assert finder.write("SELECT 1 FROM t_a; ") is None
    assert finder.write("SELECT 1 FROM t_a; SELECT 2 FROM t_b") is None
    assert finder.write("SELECT 1 FROM t_a; DELETE FROM t_b") == ("delete", {"t_b"}, False)
    kind, tables, everything = finder.write("UPDATE t_a SET x = 1; DELETE FROM t_b")
    assert (tables, everything) == ({"t_a", "t_b"}, True)


@pytest.mark.skipif(POSTGRES, reason="executescript is sqlite3's")
def test_sqlite_executescript(data, probe):
    p = probe(Book, books)
    with connection.cursor() as cursor:
        cursor.executescript("UPDATE testapp_book SET status = 4; SELECT 1;")
    p.assert_fresh()


@pytest.mark.skipif(not POSTGRES, reason="psycopg sql.Composed statements")
def test_psycopg_composed_statement(data, probe):
    from psycopg import sql

    p = probe(Book, books)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("UPDATE {} SET status = %s").format(sql.Identifier("testapp_book")), [4]
        )
    p.assert_fresh()


@pytest.mark.skipif(not POSTGRES, reason="EXPLAIN ANALYZE runs the statement on PostgreSQL")
def test_raw_explain_analyze_update_is_a_write(data, probe):
    # PostgreSQL executes the statement under EXPLAIN ANALYZE: the rows change.
    p = probe(Book, books)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN ANALYZE UPDATE testapp_book SET status = 8")
        cursor.fetchall()
    assert set(Book.objects.nocache().values_list("status", flat=True)) == {8}
    p.assert_fresh()


def test_schema_qualified_and_quoted_table_names(data, probe):
    p = probe(Book, books)
    table = '"public"."testapp_book"' if POSTGRES else '"main"."testapp_book"'
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET status = 11")
    p.assert_fresh()


def test_unmanaged_model_over_the_same_table(data, probe):
    from tests.testapp.models import AuthorView

    p = probe(AuthorView, lambda m: m.order_by("pk").values_list("pk", "name"))
    Author.objects.filter(pk=data["bob"].pk).update(name="Robert")
    p.assert_fresh()


# -- management commands ---------------------------------------------------------------------


def test_flush(data, probe):
    ps = [probe(Book, books), probe(Review, reviews), probe(Author, authors), probe(Tag, tags)]
    call_command("flush", interactive=False, verbosity=0)
    for p in ps:
        assert p.assert_fresh() == []


def test_loaddata(data, probe, tmp_path):
    p_authors = probe(Author, authors)
    p_books = probe(Book, books)
    fixture = tmp_path / "qs_fixture.json"
    fixture.write_text(
        json.dumps(
            [
                # an update of an existing row and an insert
                {
                    "model": "testapp.author",
                    "pk": data["alice"].pk,
                    "fields": {"name": "Alice (loaded)", "age": 36},
                },
                {"model": "testapp.author", "pk": 1000, "fields": {"name": "Loaded", "age": 1}},
                {
                    "model": "testapp.book",
                    "pk": 1000,
                    "fields": {
                        "title": "Loaded book",
                        "author": 1000,
                        "price": "3.00",
                        "status": 1,
                        "tags": [],
                    },
                },
            ]
        )
    )
    call_command("loaddata", str(fixture), verbosity=0)
    p_authors.assert_fresh()
    p_books.assert_fresh()


# -- inheritance and proxies -------------------------------------------------------------------


def test_multi_table_inheritance_insert_writes_parent(probe):
    Place.objects.create(name="Park")
    p_place = probe(Place, lambda m: m.order_by("pk").values_list("pk", "name"))
    p_rest = probe(Restaurant, lambda m: m.order_by("pk").values_list("pk", "name", "serves_pizza"))
    Restaurant.objects.create(name="Luigi's", serves_pizza=True)
    p_place.assert_fresh()
    p_rest.assert_fresh()


def test_multi_table_inheritance_update_and_delete(probe):
    r = Restaurant.objects.create(name="Luigi's", serves_pizza=True)
    p_place = probe(Place, lambda m: m.order_by("pk").values_list("pk", "name"))
    p_rest = probe(Restaurant, lambda m: m.order_by("pk").values_list("pk", "name", "serves_pizza"))
    # The name lives in testapp_place only.
    Place.objects.filter(pk=r.pk).update(name="Mario's")
    p_rest.assert_fresh()
    p_rest.prime()
    p_place.prime()
    r.delete()
    p_place.assert_fresh()
    p_rest.assert_fresh()


def test_multi_table_child_get_via_parent(probe):
    r = Restaurant.objects.create(name="Luigi's")
    p = probe(
        Place,
        lambda m: m.get(pk=r.pk).restaurant.serves_pizza,
        label="testapp.Restaurant",
        truth=lambda: Restaurant.objects.nocache().get(pk=r.pk).serves_pizza,
    )
    Restaurant.objects.filter(pk=r.pk).update(serves_pizza=True)
    p.assert_fresh()


def test_proxy_save_invalidates_concrete(data, probe):
    p = probe(Author, authors)
    # A different SQL text from the Author read (same SQL would share the entry).
    p_proxy = probe(AuthorProxy, lambda m: authors(m.filter(age__gte=0)))
    a = AuthorProxy.objects.nocache().get(pk=data["alice"].pk)
    a.age = 80
    a.save()
    p.assert_fresh()
    p_proxy.assert_fresh()
    p.prime()
    AuthorProxy.objects.create(name="Proxy")
    p.assert_fresh()


def test_concrete_save_invalidates_proxy(data, probe):
    p_proxy = probe(AuthorProxy, authors)
    Author.objects.filter(pk=data["bob"].pk).update(name="Robert")
    p_proxy.assert_fresh()


# -- tables inside the read ------------------------------------------------------------------


def test_filter_subquery_table_is_watched(data, probe):
    p = probe(
        Book,
        lambda m: (
            m.filter(author__in=Author.objects.filter(age__gt=40))
            .order_by("pk")
            .values_list("pk", "title")
        ),
    )
    Author.objects.filter(pk=data["alice"].pk).update(age=45)
    p.assert_fresh()


def test_exists_subquery_table_is_watched(data, probe):
    p = probe(
        Author,
        lambda m: (
            m.filter(Exists(Book.objects.filter(author=OuterRef("pk"), status=2)))
            .order_by("pk")
            .values_list("name")
        ),
    )
    Book.objects.filter(pk=data["b2"].pk).update(status=2)
    p.assert_fresh()


def test_annotation_subquery_table_is_watched(data, probe):
    latest = Book.objects.filter(author=OuterRef("pk")).order_by("-pk").values("title")[:1]
    p = probe(
        Author,
        lambda m: m.annotate(latest=Subquery(latest)).order_by("pk").values_list("name", "latest"),
    )
    Book.objects.filter(pk=data["b3"].pk).update(title="Three, retitled")
    p.assert_fresh()


def test_aggregate_annotation_over_join_is_watched(data, probe):
    p = probe(
        Author,
        lambda m: m.annotate(n=Count("books__reviews")).order_by("pk").values_list("name", "n"),
    )
    Review.objects.create(book=data["b2"], score=1)
    p.assert_fresh()


def test_union_tables_are_watched(data, probe):
    p = probe(
        Author,
        lambda m: sorted(m.values_list("name").union(Tag.objects.values_list("name"))),
    )
    Tag.objects.create(name="green")
    p.assert_fresh()


def test_select_related_join_is_watched(data, probe):
    def fn(m):
        return [
            (b.pk, b.title, b.author.name, b.editor and b.editor.name)
            for b in m.select_related("author", "editor").order_by("pk")
        ]

    p = probe(Book, fn)
    Author.objects.filter(pk=data["alice"].pk).update(name="Alicia")
    p.assert_fresh()
    p.prime()
    bob = data["bob"]
    bob.name = "Roberto"
    bob.save()
    p.assert_fresh()


def test_prefetch_related_is_fresh(data):
    # Django's m2m prefetch query uses extra(select=...), which the default
    # eligibility refuses to cache; the Book query is cached. Either way the
    # result must follow the write.
    def read(m):
        return [
            (b.pk, sorted(t.name for t in b.tags.all()))
            for b in m.prefetch_related("tags").order_by("pk")
        ]

    before = read(Book.objects)
    assert read(Book.objects) == before
    data["b2"].tags.add(data["t2"])
    after = read(Book.objects)
    assert after == read(Book.objects.nocache()) != before


# -- precision --------------------------------------------------------------------------------


def test_unrelated_write_keeps_hit(data, probe):
    p_book = probe(Book, books)
    p_count = probe(Book, lambda m: m.count())
    Tag.objects.create(name="green")
    Place.objects.create(name="Park")
    Author.objects.create(name="Zed")  # Book reads don't join Author here
    p_book.assert_hit()
    p_count.assert_hit()


def test_through_table_write_keeps_plain_book_read_a_hit(data, probe):
    # testapp_book_tags is a different table from testapp_book.
    p = probe(Book, books)
    p_tags = probe(Tag, lambda m: m.filter(books=data["b1"]).values_list("name"))
    data["b1"].tags.add(data["t2"])
    p.assert_hit()
    p_tags.assert_fresh()


def test_write_to_one_table_keeps_join_of_others_a_hit(data, probe):
    p = probe(Book, lambda m: m.filter(author__name="Alice").values_list("pk"))
    Review.objects.create(book=data["b1"], score=2)
    p.assert_hit()


# -- another database alias -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_write_on_other_alias(counts):
    Author.objects.using("other").create(name="Other", age=1)
    p = Probe(counts, Author, lambda m: authors(m.using("other")))
    p.prime()
    p_default = Probe(counts, Author, authors)
    Author.objects.create(name="Default", age=2)
    p_default.prime()
    with connections["other"].cursor() as cursor:
        cursor.execute("UPDATE testapp_author SET age = 99")
    p.assert_fresh()
    # "default" rows did not change; invalidating them too is allowed, a
    # wrong answer is not.
    p_default.assert_fresh(changed=False)
    Author.objects.using("other").filter(name="Other").delete()
    p.assert_fresh()
