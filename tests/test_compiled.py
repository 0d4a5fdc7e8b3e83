"""Remembered query shapes (``_compiled``): a read of a shape compiled before
skips Django's ``as_sql``, and must read exactly what compiling would have.

The whole suite runs with ``_compiled.CHECK`` on (``tests/fixtures.py``):
every read of a remembered shape also compiles a copy of its query and
raises on any difference. The tests here check that shapes are used, that
cached reads over generated queries return the database's rows, and — the
controls — that a planted encoder bug gives wrong rows and is caught.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import pytest
from django.db import DatabaseError, transaction
from django.db.models import Avg, Count, Exists, FloatField, Max, Min, OuterRef, Q, Sum, Value
from django.db.models.sql.compiler import SQLCompiler
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from querystash import _aggregation, _compiled, _runtime
from querystash.testing import clear_stores
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def unchecked(monkeypatch):
    """Reads of remembered shapes compile nothing extra (no ``CHECK``)."""
    monkeypatch.setattr(_compiled, "CHECK", False)


@contextmanager
def compiles():
    """The number of ``SQLCompiler.as_sql`` calls made in the block: ``n[0]``."""
    n = [0]
    original = SQLCompiler.as_sql

    def counted(self, *args, **kwargs):
        n[0] += 1
        return original(self, *args, **kwargs)

    SQLCompiler.as_sql = counted
    try:
        yield n
    finally:
        SQLCompiler.as_sql = original


@pytest.fixture
def authors():
    ann = Author.objects.create(name="Ann", age=30)
    bob = Author.objects.create(name="Bob", age=40)
    cy = Author.objects.create(name="Cy", age=50)
    for a in (ann, bob, cy):
        for i in range(3):
            Book.objects.create(title=f"{a.name}{i}", author=a, status=i)
    return ann, bob, cy


def test_a_read_of_a_known_shape_does_not_compile(authors, counts, unchecked):
    ann, bob, _ = authors
    Author.objects.get(pk=ann.pk)  # compiles: the shape is learnt (and the entry filled)
    with compiles() as n:
        hits = counts("testapp.Author").get("hits", 0)
        assert Author.objects.get(pk=ann.pk) == ann
        assert counts("testapp.Author")["hits"] == hits + 1
    assert n[0] == 0, "a hit of a remembered shape compiled its query"
    with compiles() as n:
        assert Author.objects.get(pk=bob.pk) == bob  # a miss: compiled once, to check the shape
    assert n[0] == 1
    with compiles() as n:
        assert Author.objects.get(pk=bob.pk) == bob
        assert list(Book.objects.filter(author_id=ann.pk).values_list("title", flat=True))
    assert n[0] == 1  # the values_list read's first compile, not the get's


def test_an_outerref_to_a_column_leaves_its_queries_fast(authors, counts, unchecked):
    """Django marks the Col an OuterRef resolves to (``possibly_multivalued``),
    and for ``OuterRef("pk")`` that is the Col the pk field hands every query
    (``Field.cached_col``): the shapes holding it stay known, and a hit of
    one still compiles nothing (it compiled every time)."""
    ann, _, _ = authors
    assert Author.objects.filter(Exists(Book.objects.filter(author=OuterRef("pk")))).count() == 3
    assert "possibly_multivalued" in Author._meta.pk.cached_col.__dict__  # what Django did
    Author.objects.get(pk=ann.pk)  # learnt (or a miss of the shape, if known)
    Author.objects.get(pk=ann.pk)
    with compiles() as n:
        hits = counts("testapp.Author").get("hits", 0)
        assert Author.objects.get(pk=ann.pk) == ann
        assert counts("testapp.Author")["hits"] == hits + 1
    assert n[0] == 0, "a hit of a remembered shape compiled its query"


def test_a_query_compiling_changes_is_left_as_compiling_leaves_it(authors, unchecked):
    # select_related adds its joins to the query while compiling, and a query
    # with no filter gets its base table there: a read of a remembered shape
    # puts them in, so that its checks and strategies see the same query.
    ann, bob, _ = authors
    Book.objects.select_related("author").get(title="Ann1")  # learnt
    for title, author in (("Ann1", ann), ("Bob2", bob)):
        qs = Book.objects.select_related("author").filter(title=title)
        with compiles() as n:
            assert qs.get().author == author
        assert n[0] == (0 if author is ann else 1)  # a hit; a miss compiles to check

    def names(title):
        qs = Book.objects.select_related("author").filter(title=title)
        return [b.author.name for b in qs], qs.query

    names("Ann1")  # learnt
    with compiles() as n:
        got, query = names("Ann1")
    assert got == ["Ann"] and n[0] == 0
    # the hit's query has the join compiling adds, as its strategies saw it
    assert set(query.alias_map) == {"testapp_book", "testapp_author"}
    list(Book.objects.all())
    with compiles() as n:
        assert len(list(Book.objects.all())) == 9
    assert n[0] == 0


def test_check_catches_a_query_left_otherwise(authors, monkeypatch):
    # The planted bug: a shape that forgets what compiling changed in the
    # query. CHECK compares the queries too, not only the SQL.
    Book.objects.select_related("author").get(title="Ann1")
    monkeypatch.setattr(_compiled, "_apply", lambda changes, query: None)
    with pytest.raises(_compiled.ShapeMismatch, match="the query a remembered shape leaves"):
        Book.objects.select_related("author").get(title="Ann1")


def test_count_and_aggregate_of_a_known_shape_do_not_compile(authors, unchecked):
    ann, bob, _ = authors

    def stats(author):
        return Book.objects.filter(author_id=author).aggregate(
            n=Count("*"), s=Sum("status"), a=Avg("status"), hi=Max("pk"), lo=Min("title"),
            d=Count("status", distinct=True))

    assert Book.objects.filter(author_id=ann.pk).count() == 3  # learnt
    assert stats(ann.pk)["n"] == 3  # learnt
    with compiles() as n:
        assert Book.objects.filter(author_id=ann.pk).count() == 3
        assert stats(ann.pk) == {"n": 3, "s": 3, "a": 1.0, "hi": stats(ann.pk)["hi"], "lo": "Ann0",
                                 "d": 3}
    assert n[0] == 0, "a hit of a remembered count or aggregate compiled its query"
    with compiles() as n:
        assert Book.objects.filter(author_id=bob.pk).count() == 3  # a miss: checked once
    assert n[0] == 1


def test_exists_and_constants_of_a_known_shape_do_not_compile(authors, unchecked):
    ann, bob, cy = authors
    # exists() selects Value(1): the other values must differ from 1 to teach
    first, other = [a.pk for a in authors if a.pk not in (1, 5)][:2]
    assert Book.objects.filter(author_id=first, status__gte=5).exists() is False  # learnt
    with compiles() as n:
        assert Book.objects.filter(author_id=first, status__gte=5).exists() is False
    assert n[0] == 0
    with compiles() as n:  # a miss: compiled once, to check the shape
        assert Book.objects.filter(author_id=other, status__gte=2).exists() is True
    assert n[0] == 1

    def tagged(k, author):
        return set(Book.objects.filter(author_id=author).annotate(k=Value(k))
                   .values_list("k", flat=True))

    assert tagged(7, ann.pk) == {7}  # learnt
    assert tagged(8, bob.pk) == {8}
    with compiles() as n:
        assert tagged(8, bob.pk) == {8}
    assert n[0] == 0
    assert tagged(9, cy.pk) == {9}


def test_an_aggregate_given_an_output_field_always_compiles(authors, unchecked):
    # An explicit output_field hides behind a cached_property of that name:
    # the encoder cannot see it, so it refuses the aggregate.
    ann, _, _ = authors
    for _ in range(3):
        with compiles() as n:
            got = Book.objects.filter(author_id=ann.pk).aggregate(
                s=Sum("status", output_field=FloatField()))
        assert got == {"s": 3.0} and n[0] == 1


def test_equal_values_teach_a_shape_of_their_own(authors, unchecked):
    # With two equal values, two places could be swapped unseen: which
    # values are equal is part of the shape, so a shape learnt from equal
    # values serves only reads whose values are equal in the same places.
    ann, bob, _ = authors
    same = ann.pk

    def read(status, author):
        return sorted(b.title for b in Book.objects.filter(status=status, author_id=author))

    def either(k):  # the user's rows, as sender or recipient: one value, twice
        return sorted(b.title for b in Book.objects.filter(Q(author_id=k) | Q(editor_id=k)))

    equal, different = (read_uncached(status=same, author_id=same),
                        read_uncached(status=1, author_id=bob.pk))
    assert read(same, same) == equal
    with compiles() as n:
        got = read(same, same)
    assert got == equal and n[0] == 0, "equal values taught no shape"
    with compiles() as n:
        got = read(1, bob.pk)
    assert got == different == ["Bob1"]
    assert n[0] == 1, "two different values took the shape of two equal ones"
    with compiles() as n:
        assert read(1, bob.pk) == different
    assert n[0] == 0
    for k in (ann.pk, bob.pk, ann.pk):
        assert either(k) == sorted(b.title for b in Book.objects.nocache().filter(
            Q(author_id=k) | Q(editor_id=k)))
    with compiles() as n:
        got = either(bob.pk)
    assert got == ["Bob0", "Bob1", "Bob2"] and n[0] == 0


def read_uncached(**terms) -> list:
    return sorted(b.title for b in Book.objects.nocache().filter(**terms))


@pytest.fixture
def swapping_encoder(monkeypatch, unchecked):
    """Planted: an encoder giving a query's values in the reverse of its
    parameters' order, and no miss checking its shape (``confirm``). Only
    a shape learnt from equal values passes ``learn``'s check of the order."""
    original = _compiled.Shapes.encode_query

    def encode_query(self, *args):
        found = original(self, *args)
        return found and (found[0], found[1][::-1], found[2])

    monkeypatch.setattr(_compiled.Shapes, "encode_query", encode_query)
    monkeypatch.setattr(_compiled, "confirm", lambda *args: None)


def _swapped_read(authors) -> tuple[list, list]:
    """Learn the shape from two equal values, then read two different ones:
    (cached rows, database rows)."""
    ann, bob, _ = authors
    _runtime.current.shapes._memo.clear()  # what earlier tests learnt
    for _ in range(2):
        list(Book.objects.filter(status=ann.pk, author_id=ann.pk))
    got = sorted(b.title for b in Book.objects.filter(status=0, author_id=bob.pk))
    return got, read_uncached(status=0, author_id=bob.pk)


def test_control_equal_places_keep_a_swapping_encoder_right(authors, swapping_encoder):
    got, want = _swapped_read(authors)
    assert got == want == ["Bob0"]


def test_control_without_equal_places_a_swapping_encoder_serves_wrong_rows(
        authors, swapping_encoder, monkeypatch):
    original = _compiled.Shapes.encode_query

    def without_equal_places(self, *args):  # planted: the equal places dropped
        found = original(self, *args)
        if found and len(found[0]) > 2 and found[0][-2] is _compiled._EQUAL:
            return (found[0][:-2], *found[1:])
        return found

    monkeypatch.setattr(_compiled.Shapes, "encode_query", without_equal_places)
    got, want = _swapped_read(authors)
    assert got != want, "the planted bug went unseen: the control proves nothing"


def test_out_of_range_integers_compile(authors, unchecked):
    # Django compiles an integer out of the column's range to no WHERE
    # clause, or to no query: such a value never takes a remembered shape.
    ann, _, _ = authors
    list(Author.objects.filter(age__lt=5))
    list(Author.objects.filter(age__lt=5))
    with compiles() as n:
        assert sorted(a.name for a in Author.objects.filter(age__lt=2**70)) == ["Ann", "Bob", "Cy"]
    assert n[0] == 1
    with compiles() as n:
        assert list(Author.objects.filter(age__lt=-(2**70))) == []
    assert n[0] >= 1


# -- generated reads: cached rows == database rows, with every shape checked ----------------

INTS = st.one_of(
    st.integers(-3, 12),
    st.sampled_from([0, -1, 2**15 - 1, 2**15, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1,
                     2**63 - 1, -(2**63)]),
)
STRS = st.one_of(st.sampled_from(["", "Ann", "Bob", "Ann1", "Bob2", "Cy0", "%", "'", "a'b",
                                  "Ann%", "_", "ä", "\\"]),
                 st.text(max_size=4).filter(lambda s: "\x00" not in s))
LOOKUPS = ["", "__gt", "__gte", "__lt", "__lte"]
FIELDS = [("Author", "pk", INTS), ("Author", "age", INTS), ("Author", "name", STRS),
          ("Book", "pk", INTS), ("Book", "status", INTS), ("Book", "author_id", INTS),
          ("Book", "author", INTS), ("Book", "title", STRS), ("Book", "author__name", STRS),
          ("Book", "author__age", INTS)]
MODELS = {"Author": Author, "Book": Book}


@st.composite
def reads(draw):
    model = draw(st.sampled_from(["Author", "Book"]))
    fields = [f for f in FIELDS if f[0] == model]
    terms = []
    for _ in range(draw(st.integers(1, 3))):
        _, name, values = draw(st.sampled_from(fields))
        terms.append((draw(st.booleans()), name + draw(st.sampled_from(LOOKUPS)),
                      draw(values)))
    order = draw(st.sampled_from(["pk", "-pk"]))
    limit = draw(st.sampled_from([None, 1, 2, 5]))
    form = draw(st.sampled_from(["rows", "values", "get", "count", "aggregate", "exists",
                                 "constant", "related", "all", "joined", "distinct"]))
    return model, terms, order, limit, form, draw(INTS)


def run(read, cached: bool):
    model, terms, order, limit, form, constant = read
    qs = MODELS[model].objects.all() if cached else MODELS[model].objects.nocache()
    for negate, lookup, value in terms:
        qs = qs.exclude(**{lookup: value}) if negate else qs.filter(**{lookup: value})
    qs = qs.order_by(order)
    if limit is not None:
        qs = qs[:limit]
    try:
        if form == "values":
            return list(qs.values_list("pk", flat=True))
        if form == "get" and limit is None:
            return qs.get().pk
        if form == "count":
            return qs.count()
        if form == "exists":
            return qs.exists()
        if form == "related" and model == "Book":  # select_related: joins added compiling
            return [(b.pk, b.author.name, b.editor and b.editor.name)
                    for b in qs.select_related("author", "editor")]
        if form == "all":  # no filter: compiling adds the base table
            base = MODELS[model].objects.all() if cached else MODELS[model].objects.nocache()
            return [o.pk for o in base.order_by(order)]
        if form == "constant":  # Value(n): a constant in the SELECT, a value of the shape
            return list(qs.annotate(c=Value(constant)).values_list("pk", "c"))
        if form == "joined" and model == "Book" and limit is None:
            # aggregates over a join (_aggregation's plans hold its bookkeeping)
            return qs.aggregate(age=Max("author__age"), n=Count("author__name", distinct=True),
                                s=Sum("status"))
        if form == "distinct" and limit is None:  # a count over a subquery: never planned
            return qs.values("pk").distinct().count()
        if form == "aggregate" and limit is None:
            got = qs.aggregate(n=Count("pk"), d=Count("pk", distinct=True), s=Sum("pk"),
                               a=Avg("pk"), hi=Max("pk"), lo=Min("pk"))
            return {k: float(v) if v is not None else None for k, v in got.items()}
        return [(o.pk, str(o)) for o in qs]
    except (*MODEL_ERRORS, DatabaseError, OverflowError) as exc:
        # e.g. SQLite refuses an integer past 64 bits: the same error either way
        return type(exc).__name__


MODEL_ERRORS = (Author.DoesNotExist, Author.MultipleObjectsReturned, Book.DoesNotExist,
                Book.MultipleObjectsReturned)


@hsettings(max_examples=60, deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.function_scoped_fixture,
                                  HealthCheck.too_slow])
@given(batch=st.lists(reads(), min_size=2, max_size=4))
def test_generated_reads_equal_the_database(authors, batch):
    # Each read three times (learn, hit, hit) and once uncached, interleaved
    # with the others of its batch: shapes are shared across values.
    for read in batch + batch + batch:
        assert run(read, True) == run(read, False), read
    assert _runtime.current.shapes._memo, "no shape was learnt: the test reads nothing fast"
    planned = _runtime.current.aggregations._memo.values()
    assert any(isinstance(p, _aggregation.Plan) for p in planned), (
        "no count or aggregate was planned: the test builds none from a plan")


# -- controls: a planted encoder bug gives wrong rows, and is caught -------------------------


@pytest.fixture
def limit_blind(monkeypatch):
    """The planted bug: the encoder skips the query's LIMIT, so ``[:1]`` and
    ``[:2]`` share a shape."""
    monkeypatch.setattr(_compiled, "_QUERY_SKIPPED", _compiled._QUERY_SKIPPED | {"high_mark"})


@pytest.fixture
def distinct_blind(monkeypatch):
    """A planted bug in aggregates: the encoder skips ``Count``'s ``distinct``,
    so ``Count("status")`` and ``Count("status", distinct=True)`` share a shape."""
    monkeypatch.setitem(_compiled._DERIVED, Count, _compiled._derived(Count) | {"distinct"})


def distinct_statuses(author, distinct):
    """Count of the author's books' statuses (all 7: 3 plain, 1 distinct)."""
    return Book.objects.filter(author_id=author.pk).aggregate(
        n=Count("status", distinct=distinct))["n"]


def test_control_planted_aggregate_bug_serves_wrong_rows_without_the_check(
        authors, distinct_blind, unchecked):
    ann, _, _ = authors
    Book.objects.filter(author_id=ann.pk).update(status=7)

    assert distinct_statuses(ann, False) == 3
    assert distinct_statuses(ann, True) == 3, "the planted bug should serve the plain count's entry"


def test_control_check_catches_the_planted_aggregate_bug(authors, distinct_blind):
    ann, _, _ = authors
    Book.objects.filter(author_id=ann.pk).update(status=7)

    assert distinct_statuses(ann, False) == 3
    with pytest.raises(_compiled.ShapeMismatch):
        distinct_statuses(ann, True)


def test_control_planted_bug_serves_wrong_rows_without_the_check(authors, limit_blind,
                                                                 unchecked):
    def first(n, cached=True):
        qs = Author.objects.all() if cached else Author.objects.nocache()
        return [a.name for a in qs.filter(age__gte=0).order_by("pk")[:n]]

    assert first(1) == ["Ann"]  # learnt, and filled
    assert first(2, cached=False) == ["Ann", "Bob"]
    assert first(2) == ["Ann"], "the planted bug should serve [:1]'s entry for [:2]"


def test_control_check_catches_the_planted_bug(authors, limit_blind):
    def first(n):
        return [a.name for a in Author.objects.filter(age__gte=0).order_by("pk")[:n]]

    assert first(1) == ["Ann"]
    with pytest.raises(_compiled.ShapeMismatch):
        first(2)


def test_control_a_miss_catches_the_planted_bug(authors, limit_blind, unchecked, caplog):
    # The entry of [:1] is gone: [:2] misses, compiles to check its shape,
    # finds other SQL, reads the database and fills nothing.
    def first(n):
        return [a.name for a in Author.objects.filter(age__gte=0).order_by("pk")[:n]]

    assert first(1) == ["Ann"]
    clear_stores()
    with caplog.at_level(logging.ERROR, logger="querystash"):
        assert first(2) == ["Ann", "Bob"]
    assert "compiled to other SQL than remembered" in caplog.text
    with compiles() as n:
        assert first(2) == ["Ann", "Bob"]
        assert first(1) == ["Ann"]
    assert n[0] >= 2, "the shape found wrong is still used"


def test_control_a_read_that_fills_nothing_just_compiles(authors, limit_blind, unchecked):
    # Read-your-writes inside a transaction bypasses the cache: no fill, so
    # no check of the shape either; Django compiles the query itself.
    def first(n):
        return [a.name for a in Author.objects.filter(age__gte=0).order_by("pk")[:n]]

    assert first(1) == ["Ann"]
    with transaction.atomic():
        Author.objects.filter(name="Cy").update(age=51)
        assert first(2) == ["Ann", "Bob"]
