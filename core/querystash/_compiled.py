"""The SQL a read compiles to, remembered per query *shape*: a hit skips ``as_sql``.

Compiling is about a third of a hit (Django's ``as_sql``), and most reads are
the same few queries with other values: ``get(pk=k)``, ``filter(author_id=k)``.
A query's *shape* is an exact encoding of everything its SQL depends on — the
compiler and connection, every attribute of its ``Query``, every node of its
``WHERE`` tree — except the right-hand values of simple comparisons, which
are its *values*. The first read of a shape compiles as usual; when the SQL's
parameters are exactly its values, in order, the shape remembers that SQL.
The next read of the shape takes ``(sql, values)`` from here, and keys,
tags and stamps it exactly as if ``as_sql`` had returned them.

Exactness rests on refusing what this module cannot vouch for; anything else
compiles as before:

- only classes it knows, compared by exact type (no subclass, which could
  compile differently): Django's ``Query``, ``WhereNode``, ``Col``,
  ``BaseTable``, ``Join``, the comparison and null lookups, the aggregates
  ``count()`` and ``aggregate()`` add (``Count``, ``Sum``, ``Avg``, ``Max``,
  ``Min`` over columns or ``*``, given no ``output_field``), and an integer
  ``Value`` (``exists()`` selects ``Value(1)``), which is a value; ``F()``
  for the aggregates ``get_aggregation`` is given (``_aggregation``);
- a value is the right-hand side of ``=``, ``<``, ``<=``, ``>``, ``>=`` on a
  column of a field whose preparation leaves an ``int`` or ``str`` unchanged
  (integer, auto, char and text fields, foreign keys to them), of exact type
  ``int`` (within the column's range: Django compiles an out-of-range integer
  to no WHERE or no query at all) or ``str``; every other constant (a ``bool``,
  ``None``, the ``LIMIT``) is part of the shape, and so is which values are
  equal (a shape learnt from two equal values cannot tell which is which
  parameter, so it serves only queries with those values equal);
- the tags and the checks of a read must see the query as compiling leaves
  it: what compiling changes in it (``select_related`` adds its joins, a
  query with no filter gets its base table) is remembered and put into the
  query of every read of the shape, and only when that is the joins'
  bookkeeping alone and putting it into the query as it was before
  compiling gives the very query compiling left; else never remembered.

Every miss checks its shape: it compiles, and SQL or parameters other than
the remembered ones forget the shape and keep the read from filling.
``CHECK`` (the test suite sets it) makes every hit compile a copy too, and
raise if the SQL, the parameters or the query left differ from what the
shape gives.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property as _functools_cached_property

from django.db.models.aggregates import Avg, Count, Max, Min, Sum
from django.db.models.base import ModelBase
from django.db.models.expressions import Col, F, Star, Value
from django.db.models.fields import (
    AutoField,
    BigAutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    Field,
    IntegerField,
    PositiveBigIntegerField,
    PositiveIntegerField,
    PositiveSmallIntegerField,
    SlugField,
    SmallAutoField,
    SmallIntegerField,
    TextField,
)
from django.db.models.fields.related import ForeignKey, OneToOneField
from django.db.models.fields.related_lookups import (
    RelatedExact,
    RelatedGreaterThan,
    RelatedGreaterThanOrEqual,
    RelatedIsNull,
    RelatedLessThan,
    RelatedLessThanOrEqual,
)
from django.db.models.fields.reverse_related import ForeignObjectRel
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    IntegerFieldExact,
    IntegerGreaterThan,
    IntegerGreaterThanOrEqual,
    IntegerLessThan,
    IntegerLessThanOrEqual,
    IsNull,
    LessThan,
    LessThanOrEqual,
)
from django.db.models.sql.datastructures import BaseTable, Join
from django.db.models.sql.query import Query
from django.db.models.sql.where import WhereNode
from django.utils.functional import cached_property

logger = logging.getLogger("querystash")

#: the test suite sets it: every hit of a remembered shape compiles too, and
#: a difference raises ``ShapeMismatch``
CHECK = False

#: shapes remembered at most; beyond, the memo starts again
LIMIT = 4096

#: comparisons whose right-hand side can be a value
_COMPARISONS = frozenset({
    Exact, GreaterThan, GreaterThanOrEqual, LessThan, LessThanOrEqual,
    IntegerFieldExact, IntegerGreaterThan, IntegerGreaterThanOrEqual, IntegerLessThan,
    IntegerLessThanOrEqual,
    RelatedExact, RelatedGreaterThan, RelatedGreaterThanOrEqual, RelatedLessThan,
    RelatedLessThanOrEqual,
})
_NULL_TESTS = frozenset({IsNull, RelatedIsNull})
#: fields whose get_prep_value/get_db_prep_value return an int or a str unchanged
_INT_FIELDS = frozenset({
    AutoField, BigAutoField, SmallAutoField, IntegerField, BigIntegerField,
    SmallIntegerField, PositiveIntegerField, PositiveSmallIntegerField,
    PositiveBigIntegerField,
})
_STR_FIELDS = frozenset({CharField, TextField, SlugField})
_RELATED_FIELDS = frozenset({ForeignKey, OneToOneField})
#: aggregates whose SQL is their function over their source columns (the
#: output field they derive from those columns' fields, which the shape names)
_AGGREGATES = frozenset({Count, Sum, Avg, Max, Min})
#: constructor arguments of an aggregate that are attributes of it the shape
#: encodes; any other (an ``output_field``, which a ``cached_property`` of the
#: same name hides from the encoder) refuses
_AGGREGATE_ARGS = frozenset({"distinct", "filter"})
#: the annotations a shape may have
_ANNOTATIONS = _AGGREGATES | {Value}
#: an F()'s attributes
_F_ATTRIBUTES = frozenset({"name", "_constructor_args"})
#: the field an integer Value compiles as
_INTEGER = IntegerField()
#: attributes that never reach SQL: what ``deconstruct()`` uses (it holds
#: the right-hand value, which would make every value a shape)
_SKIPPED = frozenset({"_constructor_args"})
#: the compiler's split of the query's WHERE: not read after execute_sql, and
#: it would keep the first query's values alive
_COMPILER_SKIPPED = frozenset({"where", "having", "qualify", "query"})
#: one of these stands for True/False in a shape (1 == True in a tuple)
_TRUE, _FALSE = object(), object()
#: marks where a shape says which of its values are equal
_EQUAL = object()
_EMPTY_DICT, _EMPTY_TUPLE, _EMPTY_LIST = ("d",), ("t",), ("l",)
#: an empty container's encoding, by type (as ``_object`` gives it)
_EMPTY = {dict: _EMPTY_DICT, tuple: _EMPTY_TUPLE, list: _EMPTY_LIST,
          set: (set, frozenset()), frozenset: (frozenset, frozenset())}
#: values that are their own encoding
_PLAIN = frozenset({str, int, type(None)})
_NOTHING: frozenset = frozenset()


class ShapeMismatch(AssertionError):
    """``CHECK``: a remembered shape's SQL differs from what Django compiles."""


class Mismatch(Exception):
    """A miss found its shape's SQL wrong: the read runs uncached."""


class _Refuse(Exception):
    """Something the encoder cannot vouch for: compile as usual."""


class Shape:
    """A remembered shape: the SQL, and the compiler's state after compiling it."""

    __slots__ = ("sql", "state", "relations", "refs", "wraps", "changes")

    def __init__(self, sql: str, state: dict, relations, refs: list, wraps: tuple | None,
                 changes: dict | None = None):
        self.sql = sql
        #: per value, the type the database adapter wraps it in (psycopg's
        #: Int4 for an IntegerField on PostgreSQL), or None for none at all
        self.wraps = wraps
        #: the attributes ``as_sql`` set on the compiler, which Django reads
        #: after ``execute_sql`` (``select``, ``klass_info``, ``col_count`` ...)
        self.state = state
        #: what compiling changed in the query (select_related's joins, the
        #: base table of a query with no filter), as it left them: a read of
        #: the shape puts copies in its query, so that the read's checks and
        #: strategies see the query as compiling leaves it; None for nothing
        self.changes = changes
        #: what the SQL reads (``_relations``), read when it was compiled
        self.relations = relations
        #: every object the shape names by identity, kept alive so that no
        #: other object can ever take its ``id``
        self.refs = refs

    def use(self, compiler) -> None:
        """Leave ``compiler`` and its query as compiling the shape would."""
        compiler.__dict__.update(self.state)
        if self.changes is not None:
            _apply(self.changes, compiler.query)


class Shapes:
    """The memo of one runtime: shape -> ``Shape``, or None (never fast)."""

    def __init__(self):
        self._memo: dict = {}
        self._lock = threading.Lock()
        self._ranges: dict = {}

    def encode(self, compiler) -> tuple[tuple, tuple, list] | None:
        """``(shape, values, refs)`` of the compiler's query, or None when
        something in it is not known to compile the same for every value."""
        connection = compiler.connection
        if type(compiler) is not connection.ops.compiler("SQLCompiler"):
            return None
        return self.encode_query(compiler.query, connection,
                                 (compiler.using, compiler.elide_empty))

    def encode_query(self, query, connection, head: tuple) -> tuple[tuple, tuple, list] | None:
        """``encode`` for a query without its compiler (``head``: what the
        shape starts with instead of the compiler's)."""
        if type(query) is not Query:
            return None
        # A cheap refusal first: what is never remembered should cost little.
        # Of annotations, only aggregates (count(), aggregate()) and an
        # integer constant (exists()'s Value(1)) are known.
        annotations = query.annotations
        if annotations and any(type(a) not in _ANNOTATIONS for a in annotations.values()):
            return None
        values: list = []
        refs: list = []
        state = query.__dict__
        try:
            # The annotations first: the SELECT's parameters come before the
            # WHERE's, and the values must be in the parameters' order.
            body = ["annotations", self._object(annotations, values, refs, connection)]
            body += self._items(state.items(), _QUERY_SKIPPED, values, refs, connection)
            # annotation_select's cache: compiling may fill it, with what
            # annotation_select computes from the annotations and the mask,
            # which the shape has; only another content is part of it.
            cache = state.get("_annotation_select_cache")
            if cache is None or _computed(cache, annotations, query.annotation_select_mask):
                body.append("computed")
            else:
                body.append(self._object(cache, values, refs, connection))
        except _Refuse:
            return None
        except Exception:  # an encoder's slip must cost a compile, never a read
            if CHECK:
                raise
            logger.debug("querystash: a query shape could not be encoded", exc_info=True)
            return None
        shape = (*head, id(type(connection)), id(query.model), *body)
        if len(set(values)) < len(values):
            # Equal values: which places hold the same one is part of the
            # shape. A shape learnt from them (``learn``) cannot tell which of
            # two equal values a parameter is, and need not: it only serves
            # queries whose values are equal in the same places.
            first: dict = {}
            shape = (*shape, _EQUAL, tuple(first.setdefault(v, i) for i, v in enumerate(values)))
        refs.append(type(connection))
        refs.append(query.model)
        return shape, tuple(values), refs

    def encode_part(self, value, connection, refs: list) -> tuple[object, tuple] | None:
        """``(encoding, values)`` of one attribute's value, or None."""
        values: list = []
        try:
            return self._object(value, values, refs, connection), tuple(values)
        except _Refuse:
            return None
        except Exception:
            if CHECK:
                raise
            return None

    def get(self, shape) -> Shape | None:
        return self._memo.get(shape)

    @staticmethod
    def params(shape: Shape, values: tuple) -> tuple:
        """The parameters ``as_sql`` gives for ``values`` in ``shape``."""
        wraps = shape.wraps
        if wraps is None:
            return values
        return tuple(v if w is None else w(v) for w, v in zip(wraps, values, strict=True))

    def known(self, shape) -> bool:
        return shape in self._memo

    def learn(self, shape, refs, values: tuple, sql: str, params: tuple, before: dict,
              compiler, relations, original) -> None:
        """After the first compile of ``shape``: remember its SQL if its
        parameters are its values, each in its place, and what compiling
        changed in the query can be told (``original``: a clone of the query
        before compiling); else remember that it is never fast."""
        entry = None
        # Values equal to the parameters in order: the i-th parameter is the
        # i-th value, for every query of the shape. (Two equal values could
        # be swapped unseen; the shape says where values are equal, so every
        # query of it has them equal there too: ``encode_query``.)
        wraps = _wraps(params, values)
        if wraps is not False:
            again = self.encode(compiler)
            changes = False
            if again is not None and again[1] == values:
                changes = None if again[0] == shape else self._changes(
                    compiler, original, again)
            if changes is not False:
                state = {k: v for k, v in compiler.__dict__.items()
                         if k not in _COMPILER_SKIPPED and (k not in before or before[k] is not v)}
                entry = Shape(sql, state, relations, refs, wraps, changes)
        with self._lock:
            if len(self._memo) >= LIMIT:
                self._memo.clear()
            self._memo[shape] = entry

    def _changes(self, compiler, original, again) -> dict | bool:
        """What compiling changed in the query, if it is only the joins'
        bookkeeping (``_CHANGED``) and putting it into the query as it was
        before compiling gives the very query compiling left (its whole
        shape); else False. Joins hold no values: what compiling adds for one
        query of a shape, it adds for every query of it."""
        query = compiler.query
        changes = {name: query.__dict__[name] for name in _CHANGED if name in query.__dict__}
        if len(changes) != len(_CHANGED):
            return False
        _apply(changes, original)
        replay = self.encode(original.get_compiler(compiler.using,
                                                   elide_empty=compiler.elide_empty))
        if replay is None or replay[0] != again[0] or replay[1] != again[1]:
            return False
        return changes

    def forget(self, shape) -> None:
        with self._lock:
            self._memo[shape] = None

    # -- the encoder --------------------------------------------------------------

    def _items(self, items, skipped, values, refs, connection) -> list:
        """A dict's or a node's attributes, flat: key, value, key, value ...
        (a value's encoding is one item, so the flat list is unambiguous).
        Plain values are inlined: this loop is most of a hit's encoding."""
        out: list = []
        append = out.append
        for k, v in items:
            if k in skipped:
                continue
            append(k)
            kind = type(v)
            if kind in _PLAIN:
                append(v)
            elif kind is bool:
                append(_TRUE if v else _FALSE)
            elif kind in _EMPTY and not v:  # what _object gives an empty one
                append(_EMPTY[kind])
            else:
                append(self._object(v, values, refs, connection))
        return out

    def _object(self, value, values, refs, connection):
        """The shape of an attribute's value (plain data, or a known node)."""
        kind = type(value)
        if kind in _PLAIN:
            return value
        if kind is bool:
            return _TRUE if value else _FALSE
        if kind is dict:
            if not value:
                return _EMPTY_DICT
            if any(type(k) is not str for k in value):
                raise _Refuse
            return ("d", *self._items(value.items(), _NOTHING, values, refs, connection))
        if kind is tuple or kind is list:
            if not value:
                return _EMPTY_TUPLE if kind is tuple else _EMPTY_LIST
            return ("t" if kind is tuple else "l",
                    *[v if type(v) in _PLAIN else self._object(v, values, refs, connection)
                      for v in value])
        if kind is set or kind is frozenset:
            return (kind, frozenset(v if type(v) in _PLAIN else
                                    self._object(v, values, refs, connection) for v in value))
        if kind is WhereNode or kind is BaseTable or kind is Join or kind is Star:
            return self._node(value, values, refs, connection)
        if kind is Col:
            return self._col(value, refs)
        if kind in _COMPARISONS:
            return self._comparison(value, values, refs, connection)
        if kind in _AGGREGATES:
            args = value.__dict__.get("_constructor_args")
            if args is None or not _AGGREGATE_ARGS.issuperset(args[1]):
                raise _Refuse
            return self._node(value, values, refs, connection)
        if kind is Value:
            return self._constant(value, values, refs, connection)
        if kind is F:
            # An aggregate's column before it is resolved (aggregate("rating")):
            # its name is all (a query being compiled holds none: it would fail)
            if type(value.name) is not str or not _F_ATTRIBUTES.issuperset(value.__dict__):
                raise _Refuse
            refs.append(F)
            return ("F", value.name)
        if kind in _NULL_TESTS:
            if type(value.rhs) is not bool or type(value.lhs) is not Col:
                raise _Refuse
            return self._node(value, values, refs, connection)
        if _is_field(value) or isinstance(value, ModelBase):
            refs.append(value)
            return ("f", id(value))
        raise _Refuse

    def _node(self, node, values, refs, connection):
        """A known node: its class and its own attributes, in order."""
        kind = type(node)
        refs.append(kind)
        return (id(kind), *self._items(node.__dict__.items(),
                                       _DERIVED.get(kind) or _derived(kind),
                                       values, refs, connection))

    def _col(self, col, refs):
        target, output = col.target, col.output_field
        if not _is_field(target) or not _is_field(output):
            raise _Refuse
        refs.extend((target, output))
        if not _COL_KNOWN.issuperset(col.__dict__):
            raise _Refuse  # anything else on a Col: not the Col this module knows
        # Django sets possibly_multivalued on the Col an OuterRef resolves to
        # (a subquery's GROUP BY reads it), and that may be the Col a field
        # hands out to every query (Field.cached_col): a part of the shape,
        # so that an Exists(OuterRef("pk")) somewhere leaves the pk's other
        # queries fast.
        multivalued = col.possibly_multivalued
        if type(multivalued) is not bool:
            raise _Refuse
        return ("c", col.alias, id(target), id(output), _TRUE if multivalued else _FALSE)

    def _comparison(self, lookup, values, refs, connection):
        lhs, rhs = lookup.lhs, lookup.rhs
        if type(lhs) is not Col:
            raise _Refuse
        # (only reached for a type in _COMPARISONS)
        if not _COMPARISON_KNOWN[type(lookup)].issuperset(lookup.__dict__) or \
                lookup.bilateral_transforms:
            raise _Refuse
        field = _prepared_by(lhs.output_field)
        kind = type(rhs)
        if kind is int and field in _INT_FIELDS:
            if not self._in_range(connection, lhs.output_field, rhs):
                raise _Refuse  # compiles to no WHERE, or to no query at all
        elif not (kind is str and field in _STR_FIELDS):
            if kind is bool and field is BooleanField:
                return (id(type(lookup)), self._col(lhs, refs), _TRUE if rhs else _FALSE)
            raise _Refuse
        refs.append(type(lookup))
        values.append(rhs)
        return (id(type(lookup)), self._col(lhs, refs), len(values))

    def _constant(self, node, values, refs, connection):
        """``Value(n)``, an integer given no output field (exists() selects
        ``Value(1)``): it compiles to one parameter, ``n`` as an
        ``IntegerField`` prepares it, which is ``n`` (psycopg wraps it)."""
        number = node.value
        args = node.__dict__.get("_constructor_args")
        if type(number) is not int or args is None or len(args[0]) != 1 or args[1]:
            raise _Refuse  # an output_field hides behind a cached_property
        rest = [k for k in node.__dict__
                if k not in _DERIVED_VALUE and k not in ("value", "for_save", "is_summary")]
        if rest or node.for_save or type(node.__dict__.get("is_summary", False)) is not bool:
            raise _Refuse
        # the output field compiling resolves and caches is an IntegerField;
        # one set on the node since is another
        for name in ("output_field", "_output_field_or_none"):
            found = node.__dict__.get(name)
            if found is not None and type(found) is not IntegerField:
                raise _Refuse
        if not self._in_range(connection, _INTEGER, number):
            raise _Refuse
        refs.append(Value)
        values.append(number)
        summary = node.__dict__.get("is_summary")
        return (id(Value), None if summary is None else _TRUE if summary else _FALSE,
                len(values))

    def _in_range(self, connection, field, number: int) -> bool:
        low, high = self._range(connection, field)
        return (low is None or number >= low) and (high is None or number <= high)

    def _range(self, connection, field):
        """The integers the column takes (a foreign key's: its target's)."""
        if type(field) in _RELATED_FIELDS:
            field = field.target_field
        internal = field.get_internal_type()
        key = (type(connection), internal)
        found = self._ranges.get(key)
        if found is None:
            try:
                found = connection.ops.integer_field_range(internal)
            except KeyError:
                raise _Refuse from None
            self._ranges[key] = found
        return found


_DERIVED: dict[type, frozenset] = {}


def _derived(kind: type) -> frozenset:
    """Attributes of ``kind`` never read to build SQL from: values its
    ``cached_property`` attributes computed from the others (``identity``,
    ``contains_aggregate``, a Query's ``base_table`` ...), and the
    constructor's arguments, which ``deconstruct()`` keeps. A Col's
    ``output_field``, given to its constructor, is read by ``_col``."""
    found = _DERIVED.get(kind)
    if found is None:
        names = {name for klass in kind.__mro__ for name, attr in vars(klass).items()
                 if isinstance(attr, (cached_property, _functools_cached_property))}
        found = _DERIVED[kind] = frozenset(names | _SKIPPED)
    return found


_DERIVED_VALUE = _derived(Value)
#: a Query's attributes left out of its shape's body: the derived ones; the
#: annotations and the cache of ``annotation_select``, which ``encode``
#: encodes itself; and ``.cache()``'s spec, which querystash reads and
#: compiling never does
_QUERY_SKIPPED = _derived(Query) | {"annotations", "_annotation_select_cache", "_querystash"}
#: a Col's attributes: ``_col`` reads these, any other refuses
_COL_KNOWN = _derived(Col) | {"target", "output_field", "alias", "possibly_multivalued"}
#: each comparison's attributes: ``_comparison`` reads these, any other refuses
_COMPARISON_KNOWN = {kind: _derived(kind) | {"lhs", "rhs", "bilateral_transforms"}
                     for kind in _COMPARISONS}


#: what compiling may change in a query (``select_related``'s joins, the base
#: table of a query with none yet), and how a query gets its own copy: the
#: ``BaseTable``/``Join`` objects themselves Django never changes in place
_CHANGED = {
    "alias_map": dict,
    "alias_refcount": dict,
    "table_map": lambda tables: {name: list(aliases) for name, aliases in tables.items()},
}


def _apply(changes: dict, query) -> None:
    state = query.__dict__
    for name, value in changes.items():
        state[name] = _CHANGED[name](value)


def _computed(cache: dict, annotations: dict, mask) -> bool:
    """Is ``cache`` what ``Query.annotation_select`` computes: the same
    annotations, in the same order, of those the mask selects?"""
    expected = [(k, v) for k, v in annotations.items() if mask is None or k in mask]
    return len(cache) == len(expected) and all(
        k == name and v is annotation
        for (k, v), (name, annotation) in zip(cache.items(), expected, strict=True))


def _is_field(value) -> bool:
    return isinstance(value, (Field, ForeignObjectRel))


def _prepared_by(field):
    """The field class whose preparation a lookup on ``field`` applies
    (a foreign key's: its target's), or None if not one of ours."""
    kind = type(field)
    if kind in _RELATED_FIELDS:
        target = field.target_field
        return type(target) if type(target) not in _RELATED_FIELDS else None
    return kind


def _wraps(params, values):
    """How each parameter is its value: None for all the very values, else
    per value None or the int subclass the adapter wraps it in (psycopg's
    ``Int2``/``Int4``/``Int8``); False if the parameters are not the values."""
    if len(params) != len(values):
        return False
    wraps = []
    for p, v in zip(params, values, strict=True):
        if type(p) is type(v) and p == v:
            wraps.append(None)
        elif (type(v) is int and isinstance(p, int) and type(p).__module__.startswith("psycopg")
              and p == v):
            wraps.append(type(p))
        else:
            return False
    return tuple(wraps) if any(wraps) else None


def _same(params, values) -> bool:
    """Equal, and of the same types, item by item."""
    return len(params) == len(values) and all(
        type(p) is type(v) and p == v for p, v in zip(params, values, strict=True))


def confirm(shapes: Shapes, shape, compiler, sql: str, params: tuple) -> None:
    """A miss of a remembered shape, before its query runs: compile, and if
    Django's SQL or parameters are not the shape's, forget the shape and
    raise ``Mismatch`` (no fill under a key of the wrong SQL)."""
    try:
        real_sql, real_params = compiler.as_sql()
    except Exception:  # EmptyResultSet, FullResultSet: not the shape's SQL either
        real_sql, real_params = None, ()
    if real_sql == sql and _same(tuple(real_params), params):
        return
    shapes.forget(shape)
    logger.error("querystash: a query shape compiled to other SQL than remembered; "
                 "the shape is no longer used (please report this): %r != %r",
                 (real_sql, real_params), (sql, params))
    raise Mismatch


def check(shapes: Shapes, shape: Shape, compiler, sql: str, params: tuple) -> None:
    """``CHECK``: compile a copy of the query, use ``shape`` on the query,
    and compare: the same SQL and parameters, and the query left the same
    (its whole shape and values)."""
    query = compiler.query.clone()
    copy = query.get_compiler(compiler.using, elide_empty=compiler.elide_empty)
    try:
        real_sql, real_params = copy.as_sql()
    except Exception as exc:
        raise ShapeMismatch(f"remembered {(sql, params)!r}, Django raised {exc!r}") from exc
    if real_sql != sql or not _same(tuple(real_params), params):
        raise ShapeMismatch(f"remembered {(sql, params)!r}, Django compiles "
                            f"{(real_sql, tuple(real_params))!r}")
    shape.use(compiler)
    compiled, used = shapes.encode(copy), shapes.encode(compiler)
    if compiled is None or used is None or compiled[:2] != used[:2]:
        raise ShapeMismatch("the query a remembered shape leaves differs from the one compiling "
                            f"leaves: {used and used[0]!r} != {compiled and compiled[0]!r}")


def check_given(shapes: Shapes, given: tuple, compiler) -> None:
    """``CHECK``: the shape a plan gave (``_aggregation``) is the query's."""
    real = shapes.encode(compiler)
    if real is None or real[:2] != given[:2]:
        raise ShapeMismatch(f"a plan gave the shape {given[0]!r}, the query's is "
                            f"{real and real[0]!r}")


def compiled(compiler) -> tuple:
    """What a compiler's ``as_sql`` gives, to compare: the SQL with its
    parameters and their types, or the exception it raised."""
    try:
        sql, params = compiler.as_sql()
    except Exception as exc:  # EmptyResultSet, FullResultSet
        return (type(exc).__name__,)
    return sql, tuple(params), tuple(type(p) for p in params)
