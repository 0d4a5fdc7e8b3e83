"""``count()`` and ``aggregate()`` without Django's ``get_aggregation`` work, per shape.

Before a ``count()`` or an ``aggregate()`` compiles, Django's
``Query.get_aggregation`` turns the queryset's query into the one that runs:
it resolves each aggregate against the query (``Count("*")`` for a count),
decides whether a subquery is needed, and clears the select, the ordering
and the limits. On a hit of ``Book.objects.filter(author=k).count()`` that is
about a quarter of the time, and it does the same to every query of a
*shape* (``_compiled``: everything but the values): it reads no value.

So the first ``get_aggregation`` of a shape, with the same aggregates (the
patched ``Query.get_aggregation`` is ``_reads.make_get_aggregation``'s), runs
Django's own and records what it changed in the query before compiling it.
The next query of that shape gets those changes put into it, and the rest is
Django's: the same compiler, the same read path (keys, tags, stamps), and
``get_aggregation``'s own last lines, which run the query and apply its
converters.

Exactness rests on refusing what this module cannot vouch for; anything else
runs Django's ``get_aggregation``:

- the query and the aggregates must encode (``_compiled``: known classes by
  exact type; an aggregate is ``Count``, ``Sum``, ``Avg``, ``Max`` or
  ``Min`` over ``F()`` names or ``*``, given no ``output_field``,
  ``default`` or ``filter``), and the aggregates hold no values;
- Django must have taken its plain branch, where the query it compiles is
  the query itself (not a subquery: existing aggregates, ``distinct()``,
  slicing ...);
- the changes must hold no values (joins and aggregates over columns), and
  putting them into a copy of the query as it was gives the very query
  Django compiled: its whole shape and every value, and the same SQL and
  parameters when both are compiled.

``_compiled.CHECK`` (the test suite sets it) makes every use of a plan run
Django's ``get_aggregation`` too, up to the compile, and raise if the query
it builds differs from the plan's.
"""

from __future__ import annotations

import threading

from django.db import connections
from django.db.models.sql.constants import SINGLE
from django.db.models.sql.query import Query

from . import _compiled

#: a shape whose first get_aggregation has not run yet
UNKNOWN = object()
#: a query's attributes a plan leaves alone: what the shape leaves out
#: (derived, or never compiled) but the annotations
_IGNORED = _compiled._QUERY_SKIPPED - {"annotations"}
#: what the compiler of a plan's query carries for the read path: the
#: compiled query's shape, known without encoding it again
GIVEN = "_querystash_shape"


class Plan:
    """What Django's get_aggregation does to every query of one shape."""

    __slots__ = ("changes", "elide_empty", "shape", "refs")

    def __init__(self, changes: dict, elide_empty: bool, shape: tuple, refs: list):
        #: attribute -> the value get_aggregation leaves (copied per use)
        self.changes = changes
        self.elide_empty = elide_empty
        #: the shape of the query it leaves, and what that shape's and the
        #: first query's shape name by identity (kept alive)
        self.shape = shape
        self.refs = refs


class Plans:
    """The memo of one runtime: (query shape, aggregates) -> ``Plan`` or None."""

    def __init__(self, shapes: _compiled.Shapes):
        self.shapes = shapes
        self._memo: dict = {}
        self._lock = threading.Lock()

    def encode(self, query, using: str, connection, aggregates: dict):
        """``(shape, values, refs)`` of the query with its aggregates, or None."""
        found = self.shapes.encode_query(query, connection, (using, "aggregation"))
        if found is None:
            return None
        shape, values, refs = found
        exprs = self.shapes.encode_part(aggregates, connection, refs)
        if exprs is None or exprs[1]:  # unknown, or holding values
            return None
        return (*shape, exprs[0]), values, refs

    def get(self, shape):
        return self._memo.get(shape, UNKNOWN)

    def remember(self, shape, plan: Plan | None) -> None:
        with self._lock:
            if len(self._memo) >= _compiled.LIMIT:
                self._memo.clear()
            self._memo[shape] = plan

    def learn(self, original, query, using, aggregates, encoded):
        """Django's get_aggregation, recording the query it compiles."""
        before = query.clone()
        seen: list = []
        result = _recorded(original, query, using, aggregates, seen, stop=False)
        plan = None
        if len(seen) == 1:  # Django's plain branch: the query itself compiled
            snapshot, elide_empty = seen[0]
            plan = self._plan(before, snapshot, using, elide_empty, encoded[2])
        self.remember(encoded[0], plan)
        return result

    def _plan(self, before, snapshot, using, elide_empty, refs) -> Plan | None:
        """What turned ``before`` into ``snapshot``, if it holds no values and
        putting it into a copy of ``before`` gives ``snapshot``; else None."""
        connection = connections[using]
        was, now = before.__dict__, snapshot.__dict__
        if set(was) - set(now) - _IGNORED:
            return None  # an attribute removed: not a change this can put
        changes = {}
        for name, value in now.items():
            if name in _IGNORED:
                continue  # derived (computed again), or never compiled
            new = self.shapes.encode_part(value, connection, refs)
            if name in was and new is not None and new == self.shapes.encode_part(
                    was[name], connection, []):
                continue
            if new is None or new[1] or not _copyable(value):
                return None  # unknown, holding values, or nested containers
            changes[name] = value
        shape, difference = self._compare(before, changes, snapshot, using, elide_empty)
        if difference is not None:
            return None
        return Plan(changes, elide_empty, shape[0], [*refs, *shape[2]])

    def check(self, original, query, using, aggregates, plan: Plan) -> None:
        """``CHECK``: Django's get_aggregation on a copy, up to the compile,
        must build the query the plan builds."""
        seen: list = []
        _recorded(original, query.clone(), using, aggregates, seen, stop=True)
        if len(seen) != 1 or seen[0][1] != plan.elide_empty:
            raise _compiled.ShapeMismatch("get_aggregation took another branch than its plan's")
        shape, difference = self._compare(query, plan.changes, seen[0][0], using,
                                          plan.elide_empty)
        if difference is None and shape[0] != plan.shape:
            difference = f"the plan's shape is {plan.shape!r}, its query's {shape[0]!r}"
        if difference is not None:
            raise _compiled.ShapeMismatch(difference)

    def _compare(self, query, changes: dict, djangos_query, using, elide_empty):
        """``changes`` put into a copy of ``query``, against the query Django
        built: ``(the copy's encoding, None)`` if they have the same shape
        and values (what the read path and the strategies see) and compile
        to the same SQL and parameters (what runs), not on the encoder's
        word alone; else ``(…, what differs)``."""
        candidate = query.clone()
        apply(changes, candidate)
        mine = candidate.get_compiler(using, elide_empty=elide_empty)
        djangos = djangos_query.get_compiler(using, elide_empty=elide_empty)
        # encoded first: compiling changes the queries
        got, want = self.shapes.encode(mine), self.shapes.encode(djangos)
        if got is None or want is None or got[:2] != want[:2]:
            return got, (f"get_aggregation's plan builds {got and got[0]!r}, "
                         f"Django {want and want[0]!r}")
        sql, djangos_sql = _compiled.compiled(mine), _compiled.compiled(djangos)
        if sql != djangos_sql:
            return got, (f"get_aggregation's plan compiles to {sql!r}, "
                         f"Django's query to {djangos_sql!r}")
        return got, None


def _recorded(original, query, using, aggregates, seen: list, stop: bool):
    """Django's get_aggregation on ``query``, its query about to be compiled
    appended to ``seen`` (in Django's plain branch); ``stop``: raise there,
    before anything runs (``check``), and return None."""
    query.__class__ = _Recorded
    _seen.target = query, seen
    _seen.stop = stop
    try:
        return original(query, using, aggregates)
    except _Stop:
        return None
    finally:
        query.__class__ = Query
        _seen.target = None
        _seen.stop = False


#: per thread, while a get_aggregation is recorded: (its query, what was seen)
#: and whether to stop before the query runs (``check``)
_seen = threading.local()


class _Stop(Exception):
    """``CHECK``: the query Django compiles is recorded; nothing runs."""


class _Recorded(Query):
    """The query of a first get_aggregation, for a moment: its get_compiler
    records the query as Django is about to compile it. Clones taken
    meanwhile (a subquery's) are of this class too, and are not recorded."""

    def get_compiler(self, using=None, connection=None, elide_empty=True):
        target = getattr(_seen, "target", None)
        if target is not None and target[0] is self and not target[1]:
            self.__class__ = Query
            if connection is None:  # get_aggregation passes a using only
                target[1].append((self.clone(), elide_empty))
            if getattr(_seen, "stop", False):
                raise _Stop
        return Query.get_compiler(self, using, connection, elide_empty)


def finish(query, compiler) -> dict:
    """The end of Django's get_aggregation (5.2 to 6.1, the same): run the
    query, apply the converters, name the results."""
    result = compiler.execute_sql(SINGLE)
    if result is None:
        result = [expression.empty_result_set_value
                  for expression in query.annotation_select.values()]
    else:
        cols = query.annotation_select.values()
        converters = compiler.get_converters(cols)
        rows = compiler.apply_converters((result,), converters)
        if compiler.has_composite_fields(cols):
            rows = compiler.composite_fields_to_tuples(rows, cols)
        result = next(rows)
    return dict(zip(query.annotation_select, result, strict=False))


def _copyable(value) -> bool:
    """A value ``_copy`` gives each query a copy of (or needs not to)."""
    kind = type(value)
    if kind is dict:
        return all(type(v) not in (dict, set) for v in value.values())
    if kind is list or kind is set:
        return all(type(v) not in (dict, set, list) for v in value)
    return kind not in (bytearray,)


def _copy(value):
    """A query's own copy, as ``Query.clone`` makes one: containers copied,
    the nodes in them (joins, resolved aggregates) shared, as clones share them."""
    kind = type(value)
    if kind is dict:
        return {k: list(v) if type(v) is list else v for k, v in value.items()}
    if kind is list:
        return list(value)
    if kind is set:
        return set(value)
    return value


def apply(changes: dict, query) -> None:
    state = query.__dict__
    for name, value in changes.items():
        state[name] = _copy(value)
    state["_annotation_select_cache"] = None  # annotation_select computes it anew
