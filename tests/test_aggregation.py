"""``count()`` and ``aggregate()`` of a shape planned before (``_aggregation``):
the query to run is built from the plan, not by Django's ``get_aggregation``,
and must be the very query Django builds.

The suite runs with ``_compiled.CHECK`` on (``tests/fixtures.py``): every use
of a plan also runs Django's ``get_aggregation`` up to the compile and raises
on any difference. The generated differential over counts and aggregates is
``tests/test_compiled.py``'s; the controls here plant a bug in the plans.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.core.exceptions import FieldError
from django.db.models import Avg, Count, Max, Sum
from django.db.models.sql.query import Query

from querystash import _aggregation, _compiled, _reads, _runtime
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def unchecked(monkeypatch):
    """Plans are used without running Django's get_aggregation too."""
    monkeypatch.setattr(_compiled, "CHECK", False)


@pytest.fixture
def authors():
    ann = Author.objects.create(name="Ann", age=30)
    bob = Author.objects.create(name="Bob", age=40)
    for a in (ann, bob):
        for i in range(3):
            Book.objects.create(title=f"{a.name}{i}", author=a, status=i)
    return ann, bob


@contextmanager
def djangos_aggregations():
    """How many times Django's own get_aggregation ran in the block: ``n[0]``."""
    n = [0]
    planned = Query.get_aggregation
    original = planned.__querystash_original__

    def counted(self, using, aggregate_exprs):
        n[0] += 1
        return original(self, using, aggregate_exprs)

    # The plan path never calls it; the learning and refused paths do.
    counted.__querystash_original__ = original
    Query.get_aggregation = _reads.make_get_aggregation(counted)
    try:
        yield n
    finally:
        Query.get_aggregation = planned


def plans() -> dict:
    return _runtime.current.aggregations._memo


def test_a_count_and_an_aggregate_of_a_planned_shape_skip_djangos_work(authors, unchecked):
    ann, bob = authors
    plans().clear()  # learnt here, whatever earlier tests planned
    known = set(plans())
    with djangos_aggregations() as n:
        assert Book.objects.filter(author_id=ann.pk).count() == 3  # learnt
        assert Book.objects.filter(author_id=ann.pk).aggregate(s=Sum("status")) == {"s": 3}
        assert n[0] == 2
        assert Book.objects.filter(author_id=ann.pk).count() == 3  # hits
        assert Book.objects.filter(author_id=bob.pk).count() == 3  # a miss: another value
        assert Book.objects.filter(author_id=bob.pk).aggregate(s=Sum("status")) == {"s": 3}
    assert n[0] == 2, "a count or an aggregate of a planned shape ran Django's get_aggregation"
    new = set(plans()) - known
    assert len(new) == 2 and all(isinstance(plans()[k], _aggregation.Plan) for k in new)


def test_a_count_with_no_filter_is_planned(authors):
    # Compiling gives such a query its base table: the plan is the query
    # before that, and CHECK compares both before and after compiling.
    known = set(plans())
    assert [Author.objects.count() for _ in range(3)] == [2, 2, 2]
    assert [Book.objects.aggregate(n=Count("*")) for _ in range(3)] == [{"n": 6}] * 3
    new = set(plans()) - known
    assert len(new) == 2 and all(isinstance(plans()[k], _aggregation.Plan) for k in new)


def test_a_plan_reads_what_writes_left(authors, unchecked):
    ann, _ = authors
    assert Book.objects.filter(author_id=ann.pk).count() == 3
    assert Book.objects.filter(author_id=ann.pk).aggregate(hi=Max("status")) == {"hi": 2}
    Book.objects.create(title="Ann9", author=ann, status=9)
    assert Book.objects.filter(author_id=ann.pk).count() == 4
    assert Book.objects.filter(author_id=ann.pk).aggregate(hi=Max("status")) == {"hi": 9}
    Book.objects.filter(author_id=ann.pk).delete()
    assert Book.objects.filter(author_id=ann.pk).count() == 0
    assert Book.objects.filter(author_id=ann.pk).aggregate(hi=Max("status")) == {"hi": None}


def test_an_aggregate_over_a_join_is_planned(authors, unchecked):
    # Resolving author__age uses the author table's join: the plan holds
    # the joins' bookkeeping.
    ann, bob = authors
    known = set(plans())
    for author in (ann, bob, ann, bob):
        got = Book.objects.filter(author_id=author.pk).aggregate(
            age=Avg("author__age"), n=Count("author__name", distinct=True))
        assert got == {"age": author.age, "n": 1}
    planned = [plans()[k] for k in set(plans()) - known]
    assert len(planned) == 1 and "alias_refcount" in planned[0].changes


def test_a_count_over_a_subquery_has_no_plan(authors):
    # Slices, distinct() and existing aggregates make Django count over a
    # subquery: nothing is planned, Django builds each.
    ann, bob = authors
    known = set(plans())
    for author in (ann, bob, ann):
        assert Book.objects.filter(author_id=author.pk)[:2].count() == 2
        assert Book.objects.filter(author_id=author.pk).values("status").distinct().count() == 3
    new = set(plans()) - known
    assert len(new) == 2 and all(plans()[k] is None for k in new)


def test_a_failing_aggregate_fails_as_django_does_and_is_not_planned(authors):
    known = set(plans())
    for _ in range(2):
        with pytest.raises(FieldError):
            Book.objects.aggregate(x=Max("nope"))
    assert set(plans()) == known
    assert type(Book.objects.all().query) is Query  # the recording class is gone
    assert Book.objects.aggregate(n=Count("pk")) == {"n": 6}


# -- controls: a planted bug in the plans gives wrong answers, and is caught -----------------


@pytest.fixture
def aggregates_blind(monkeypatch):
    """The planted bug: the plans' key leaves out the aggregates, so an
    aggregate takes the plan of another over the same query."""

    def encode(self, query, using, connection, aggregates):
        return self.shapes.encode_query(query, connection, (using, "aggregation"))

    monkeypatch.setattr(_aggregation.Plans, "encode", encode)


def test_control_planted_plan_bug_serves_wrong_answers_without_the_check(
        authors, aggregates_blind, unchecked):
    ann, _ = authors
    assert Book.objects.filter(author_id=ann.pk).aggregate(n=Sum("status")) == {"n": 3}
    assert Book.objects.filter(author_id=ann.pk).aggregate(n=Max("status")) == {"n": 3}, (
        "the planted bug should run the Sum's query for the Max")


def test_control_check_catches_the_planted_plan_bug(authors, aggregates_blind):
    ann, _ = authors
    assert Book.objects.filter(author_id=ann.pk).aggregate(n=Sum("status")) == {"n": 3}
    with pytest.raises(_compiled.ShapeMismatch, match="plan"):
        Book.objects.filter(author_id=ann.pk).aggregate(n=Max("status"))
