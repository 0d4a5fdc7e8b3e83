"""The flat-query shortcut of ``analyze`` (``_analysis._flat``): for the
queries it accepts, the two walks it skips (``uses_raw_sql`` and
``_subquery_tables``) provably find nothing, so ``analyze`` answers exactly
as without it. Checked here over generated querysets, on the ``Query``
objects Django really compiles (lists, counts, exists, values...), with a
positive control: a shortcut that ignores annotations is caught. Also
checks ``_carry`` against its previous form (``_reference_carry``) and
``analyze(..., only=tables)`` against the whole analysis.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.db.models import Count, Exists, F, OuterRef, Q, Subquery, Value
from django.db.models.expressions import RawSQL
from django.db.models.sql.compiler import SQLCompiler
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from querystash_fields import _analysis
from querystash_fields._values import kind as _kind

import querystash
from querystash import uses_raw_sql
from tests.testapp.models import Author, Book, Review

pytestmark = pytest.mark.django_db(transaction=True)

_ints = st.integers(min_value=-3, max_value=3)
_texts = st.text(alphabet="ab ,=", max_size=3)

#: one filter() argument: a Q over a column the analysis may use, or not
_conditions = st.one_of(
    _ints.map(lambda v: Q(status=v)),
    _ints.map(lambda v: Q(pk=v)),
    _ints.map(lambda v: Q(author=v)),
    _ints.map(lambda v: Q(author_id=v)),
    _texts.map(lambda v: Q(title=v)),
    _texts.map(lambda v: Q(author__name=v)),
    _ints.map(lambda v: Q(author__books__status=v)),
    _ints.map(lambda v: Q(editor=v)),
    _ints.map(lambda v: Q(reviews__score=v)),
    st.lists(st.one_of(_ints, st.none()), min_size=1, max_size=4).map(
        lambda v: Q(status__in=v)),
    st.lists(_texts, min_size=1, max_size=3).map(lambda v: Q(title__in=tuple(v))),
    st.booleans().map(lambda v: Q(editor__isnull=v)),
    st.integers(0, 99).map(lambda v: Q(price=Decimal(v) / 4)),
    st.integers(0, 9).map(lambda v: Q(published=datetime.datetime(2020, 1, 1 + v,
                                                                  tzinfo=datetime.UTC))),
    _ints.map(lambda v: Q(status__gt=v)),
    _ints.map(lambda v: Q(pk__gte=v)),
    _ints.map(lambda v: Q(author__lt=v)),
    _texts.map(lambda v: Q(title__lte=v)),
    _ints.map(lambda v: Q(author__books__status__gte=v)),
    st.integers(0, 9).map(lambda v: Q(published__lt=datetime.datetime(2020, 1, 1 + v,
                                                                       tzinfo=datetime.UTC))),
    st.just(Q(status__gt=F("author__age"))),
    st.just(Q(status=F("author__age"))),
    _ints.map(lambda v: Q(status=v) | Q(pk=v)),
    _ints.map(lambda v: ~Q(status=v)),
)


def _exists(qs):
    return qs.filter(Exists(Review.objects.filter(book=OuterRef("pk"))))


#: what may be added to the query besides its filters
_decorations = st.sampled_from([
    lambda qs: qs,
    _exists,
    lambda qs: qs.filter(author__in=Subquery(Author.objects.filter(age__gt=3).values("pk"))),
    lambda qs: qs.filter(author__in=Author.objects.filter(name="x")),
    lambda qs: qs.annotate(n=Count("reviews")),
    lambda qs: qs.annotate(x=RawSQL("1", ())),
    lambda qs: qs.annotate(x=Subquery(Review.objects.filter(book=OuterRef("pk"))
                                      .values("score")[:1])),
    lambda qs: qs.extra(where=["1 = 1"]),
    lambda qs: qs.extra(select={"one": "1"}),
    lambda qs: qs.order_by("-pk"),
    lambda qs: qs.order_by(F("price").desc()),
    lambda qs: qs.values("pk", "title"),
    lambda qs: qs.select_related("author"),
    lambda qs: qs.distinct(),
    lambda qs: qs.filter(pk__in=Review.objects.values("book")),
    lambda qs: qs.alias(c=Count("reviews")).filter(c__gt=0),
    lambda qs: qs.annotate(one=Value(1)),
    lambda qs: qs.annotate(one=Value("x")),
])

_terminals = st.sampled_from([list, lambda qs: qs.count(), lambda qs: qs.exists(),
                              lambda qs: qs.first(), lambda qs: list(qs[:3])])


def _compiled_queries(run) -> list:
    """The ``Query`` of every SELECT compiled while ``run()`` runs. With
    caching off: the hundreds of column combinations generated here would
    otherwise take every scheme slot of the table, and the plugin would
    rightly fall back to table-level tags for the tests that come after."""
    seen = []
    original = SQLCompiler.as_sql

    def as_sql(self, *args, **kwargs):
        seen.append(self.query)
        return original(self, *args, **kwargs)

    SQLCompiler.as_sql = as_sql
    try:
        with querystash.disabled():
            run()
    finally:
        SQLCompiler.as_sql = original
    return seen


def _plain(result):
    if result is None:
        return None
    return {t: None if c is None else [(x.columns, x.combos) for x in c]
            for t, c in result.items()}


def _check(query) -> None:
    """``_flat(query)`` only when both walks find nothing, and ``analyze``
    answers the same with and without the shortcut."""
    if query.combinator:
        return
    if _analysis._flat(query):
        assert uses_raw_sql(query) is False, query
        assert _analysis._subquery_tables(query) == set(), query
    for fields in ((), ("status", "author")):
        fast = _plain(_analysis.analyze(query, "postgresql", fields, 5, 16))
        flat, _analysis._flat = _analysis._flat, lambda q: False
        try:
            slow = _plain(_analysis.analyze(query, "postgresql", fields, 5, 16))
        finally:
            _analysis._flat = flat
        assert fast == slow, query
        carried, _analysis._carry = _analysis._carry, _reference_carry
        try:
            reference = _plain(_analysis.analyze(query, "postgresql", fields, 5, 16))
        finally:
            _analysis._carry = carried
        assert fast == reference, query
        # ``only``: the same entries for the tables asked about
        tables = {j.table_name for j in query.alias_map.values()}
        for only in (frozenset(tables), frozenset(list(tables)[:1]), frozenset()):
            some = _plain(_analysis.analyze(query, "postgresql", fields, 5, 16, only))
            if fast is None:
                assert some is None, query
            else:
                assert ({t: c for t, c in some.items() if t in only}
                        == {t: c for t, c in fast.items() if t in only}), query


def _reference_carry(aliases, inner, values) -> None:
    """``_carry`` as it was before it found the join columns once: every
    pass asks each join's column kinds again."""
    changed = True
    while changed:
        changed = False
        for alias, join in aliases.items():
            parent = getattr(join, "parent_alias", None)
            fields = getattr(join, "join_fields", None)
            if parent is None or not fields:
                continue
            for parent_field, child_field in fields:
                kind = _kind(parent_field)
                if kind is None or kind != _kind(child_field):
                    continue
                parent_col, child_col = parent_field.column, child_field.column
                known = values.get(parent, {}).get(parent_col)
                if known and child_col not in values.get(alias, {}):
                    values.setdefault(alias, {})[child_col] = set(known)
                    changed = True
                if alias not in inner or parent not in inner:
                    continue
                known = values.get(alias, {}).get(child_col)
                if known and parent_col not in values.get(parent, {}):
                    values.setdefault(parent, {})[parent_col] = set(known)
                    changed = True


@st.composite
def _reads(draw):
    conditions = draw(st.lists(_conditions, max_size=4))
    decorations = draw(st.lists(_decorations, max_size=2))
    terminal = draw(_terminals)

    def run():
        qs = Book.objects.all()
        for cond in conditions:
            qs = qs.filter(cond)
        for decorate in decorations:
            try:
                qs = decorate(qs)
            except TypeError:  # not after values() (select_related...): left out
                pass
        terminal(qs)
    return run


def _differential():
    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_reads())
    def check_all(run):
        for query in _compiled_queries(run):
            _check(query)
    check_all()


def test_flat_is_exact_over_generated_reads():
    _differential()


def test_flat_covers_the_usual_reads_and_not_the_others():
    # not vacuous: the usual cold misses take the shortcut ...
    for run in (lambda: Book.objects.filter(pk=1).first(),
                lambda: list(Book.objects.filter(author_id=1).order_by("id")),
                lambda: Book.objects.filter(author_id=1).count(),
                lambda: list(Book.objects.filter(status__in=[1, 2], editor__isnull=True)),
                # exists(): Value(1); ranges: gt/gte/lt/lte, Django's own
                lambda: Review.objects.filter(book_id=1, score__gte=4).exists(),
                lambda: list(Book.objects.filter(pk__gt=3, price__lte=Decimal(2),
                                                 author__lt=9, status__gt=0))):
        queries = _compiled_queries(run)
        assert queries and all(_analysis._flat(q) for q in queries)
    # ... and what the walks are for never does
    for run in (lambda: _exists(Book.objects.filter(status=1)).count(),
                lambda: list(Book.objects.annotate(x=RawSQL("1", ())).filter(status=1)),
                lambda: list(Book.objects.extra(where=["1 = 1"]).filter(status=1)),
                lambda: list(Book.objects.filter(author__in=Author.objects.filter(name="x"))),
                lambda: list(Book.objects.filter(status=1).order_by(F("price").desc())),
                lambda: list(Book.objects.filter(status__gt=F("author__age"))),
                lambda: list(Book.objects.filter(published__year__gte=2020))):
        queries = _compiled_queries(run)
        assert queries and not any(_analysis._flat(q) for q in queries)


def test_positive_control_a_shortcut_ignoring_annotations_is_caught(monkeypatch):
    """Plant the bug: a ``_flat`` that only looks at the WHERE tree (a
    RawSQL or Subquery annotation passes). The differential check fails."""
    right = _analysis._flat

    def where_only(query):
        saved = query.annotations, query.extra, query.select
        query.annotations, query.extra, query.select = {}, {}, ()
        try:
            return right(query)
        finally:
            query.annotations, query.extra, query.select = saved

    monkeypatch.setattr(_analysis, "_flat", where_only)
    # one AssertionError, or several distinct ones grouped by Hypothesis
    with pytest.raises((AssertionError, ExceptionGroup)) as caught:
        _differential()
    if isinstance(caught.value, ExceptionGroup):
        assert caught.value.split(AssertionError)[1] is None, caught.value
