"""What a query's WHERE tree says about each table it reads.

For every table the result is either a list of *conditions* — one per alias
of that table: ``(columns, value combinations)`` such that no row of the
table outside those combinations can contribute to the result — or
``None``: the table is watched as a whole.

Rules (dropping a condition only makes the tags coarser, never wrong):

- Only conjunctions of ``exact``, short ``in`` and ``isnull=True`` on a plain
  column with a plain value are used; OR, negation (``exclude``), ranges,
  expressions and subqueries are ignored.
- Values are carried across INNER join columns (``book.author_id = 5`` gives
  ``author.id = 5``) and from a parent into a LEFT OUTER joined alias; a
  WHERE condition on an outer-joined alias is never used (its NULL-extended
  rows do not satisfy it).
- A table that also appears in a subquery, ``Exists()``, an annotation or a
  union, or an alias without conditions, is watched as a whole.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from itertools import product

from django.db.models import Count
from django.db.models.expressions import Col, Star, Value
from django.db.models.fields import related_lookups
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
    Lookup,
)
from django.db.models.sql.query import Query
from django.db.models.sql.where import AND, WhereNode

from ._values import UNKNOWN, render, taggable
from ._values import kind as _kind

INNER = "INNER JOIN"


class Conditions:
    """``columns`` (sorted) and the rendered value combinations for one alias."""

    __slots__ = ("columns", "combos")

    def __init__(self, columns: tuple[str, ...], combos: list[tuple[str, ...]]):
        self.columns = columns
        self.combos = combos

    def __repr__(self) -> str:
        return f"Conditions({self.columns}, {self.combos})"


def analyze(query, vendor: str, fields: tuple[str, ...], in_limit: int, max_combos: int,
            only: frozenset[str] | None = None):
    """``{table: [Conditions, ...] | None}`` for the tables of the outer
    query, plus the set of tables seen in subqueries; or ``None`` when the
    query can't be described at all (unions, raw SQL). ``only``: the tables
    the caller will look up; the conditions of other tables' aliases are
    not built (each table's entry depends on its own aliases alone, once
    values are carried across every join)."""
    if query is None or query.combinator:
        return None
    flat = _flat(query)
    if not flat and _uses_raw_sql(query):
        return None
    # Every alias, including those whose refcount the compiler reset after
    # adding select_related joins; one that is not in the SQL only adds a
    # table that the caller, reading ``info.tables``, never asks about.
    aliases = dict(query.alias_map)
    if not aliases:
        return None
    inner = _inner_aliases(aliases)
    values: dict[str, dict[str, set[str]]] = {}
    for lookup in _conjuncts(query.where):
        found = _condition(lookup, vendor, in_limit)
        if found is None:
            continue
        alias, column, rendered = found
        if alias not in inner:
            continue  # a WHERE condition on an outer-joined alias
        per_alias = values.setdefault(alias, {})
        if column in per_alias:
            both = per_alias[column] & rendered
            if both:
                per_alias[column] = both
        else:
            per_alias[column] = set(rendered)
    _carry(aliases, inner, values)
    allowed = _allowed_columns(query, fields) if fields else None
    sub_tables = set() if flat else _subquery_tables(query)
    result: dict[str, list[Conditions] | None] = {}
    for alias, join in aliases.items():
        table = join.table_name
        if only is not None and table not in only:
            continue
        if table in result and result[table] is None:
            continue
        cols = values.get(alias, {})
        if allowed is not None:
            cols = {c: v for c, v in cols.items() if (table, c) in allowed}
        cond = _conditions(cols, max_combos) if cols else None
        if cond is None or table in sub_tables:
            result[table] = None
        else:
            result.setdefault(table, []).append(cond)
    for table in sub_tables:
        result[table] = None
    return result


def _uses_raw_sql(query) -> bool:
    global _uses_raw_sql
    from querystash import uses_raw_sql  # imports the ORM: not at import time

    _uses_raw_sql = uses_raw_sql  # resolved once, not through the package per miss
    return uses_raw_sql(query)


# -- the flat query: no walk needed -------------------------------------------------
#
# ``uses_raw_sql`` and ``_subquery_tables`` walk every expression of the
# query; most reads (``get``, ``filter(a=1, b__in=[...])``, their ``count()``)
# hold nothing they could find. ``_flat`` recognises those by exact types
# only, and for them both walks provably return ``False`` and ``set()``: the
# walks descend only through ``where``, ``annotations``, ``order_by``,
# ``select``, ``group_by``, ``extra*`` and ``combined_queries``, and within a
# node through ``query``, ``children``, ``rhs`` and
# ``get_source_expressions()``; a flat query's nodes are a ``WhereNode``
# tree of Django's own exact/in/isnull and gt/gte/lt/lte lookups, each a
# ``Col`` against plain Python values (``get_source_expressions()`` is
# ``[lhs]``, a ``Col`` has none), and at most ``Count("*")`` annotations
# (``[Star()]`` plus ``None``s) and ``Value`` annotations of a plain value
# (``exists()``'s ``Value(1)``: no source expressions).
# Anything else, a subclass included, takes the walks.
# (tests/test_fields_flat.py compares both over generated queries.)

_PLAIN = frozenset({int, bool, str, float, decimal.Decimal, datetime.date, datetime.datetime,
                    datetime.time, datetime.timedelta, uuid.UUID, type(None)})


_KINDS = (Exact, In, IsNull, GreaterThan, GreaterThanOrEqual, LessThan, LessThanOrEqual)


def _own_lookups() -> frozenset[type]:
    """Django's own exact/in/isnull and gt/gte/lt/lte lookups whose source
    expressions are ``Lookup``'s (``[lhs]`` for a direct value)."""
    from django.db.models import lookups

    found = set()
    for module in (lookups, related_lookups):
        for cls in vars(module).values():
            if (isinstance(cls, type) and issubclass(cls, _KINDS)
                    and cls.__module__ == module.__name__
                    and cls.get_source_expressions is Lookup.get_source_expressions):
                found.add(cls)
    return frozenset(found)


_LOOKUPS = _own_lookups()


def _flat(query) -> bool:
    """Does ``query`` provably hold no raw SQL and no nested query (see above)?"""
    if (query.extra or query.extra_tables or query.extra_order_by or query.select
            or query.combined_queries or isinstance(query.group_by, tuple)):
        return False
    for name in query.order_by:
        if type(name) is not str:
            return False
    for annotation in query.annotations.values():
        if type(annotation) is Value:
            if type(annotation.value) not in _PLAIN:
                return False
            continue
        if type(annotation) is not Count:
            return False
        for source in annotation.get_source_expressions():
            if source is not None and type(source) is not Star:
                return False
    stack = [query.where]
    while stack:
        node = stack.pop()
        if type(node) is WhereNode:
            stack.extend(node.children)
            continue
        if type(node) not in _LOOKUPS or type(node.lhs) is not Col:
            return False
        rhs = node.rhs
        if type(rhs) in (list, tuple):
            for item in rhs:
                if type(item) not in _PLAIN:
                    return False
        elif type(rhs) not in _PLAIN:
            return False
    return True


def _inner_aliases(aliases) -> set[str]:
    """Aliases whose rows all satisfy the WHERE conditions on them: the base
    table and INNER joins whose parents are inner too."""
    inner: set[str] = set()
    changed = True
    while changed:
        changed = False
        for alias, join in aliases.items():
            if alias in inner:
                continue
            parent = getattr(join, "parent_alias", None)
            if parent is None or (join.join_type == INNER and parent in inner):
                inner.add(alias)
                changed = True
    return inner


def _conjuncts(node):
    """The lookups ANDed at the top of a WHERE tree (OR / NOT nodes skipped)."""
    if isinstance(node, WhereNode):
        if node.negated or node.connector != AND:
            return
        for child in node.children:
            yield from _conjuncts(child)
    elif isinstance(node, (Exact, In, IsNull)):
        yield node


def _condition(lookup, vendor, in_limit):
    lhs = lookup.lhs
    alias = getattr(lhs, "alias", None)
    target = getattr(lhs, "target", None)
    if alias is None or target is None or type(lhs).__name__ != "Col":
        return None
    if not taggable(target, vendor):
        return None
    rhs = lookup.rhs
    if isinstance(lookup, IsNull):
        if rhs is not True:
            return None
        return alias, target.column, {"~"}
    if isinstance(lookup, Exact):
        if rhs is None or isinstance(rhs, Query) or hasattr(rhs, "resolve_expression"):
            return None
        text = render(target, rhs)
        return None if text is UNKNOWN else (alias, target.column, {text})
    # In
    if isinstance(rhs, Query) or hasattr(rhs, "resolve_expression"):
        return None
    try:
        items = [v for v in rhs if v is not None]
    except TypeError:
        return None
    if not items or len(items) > in_limit:
        return None
    rendered = set()
    for item in items:
        if hasattr(item, "resolve_expression"):
            return None
        text = render(target, item)
        if text is UNKNOWN:
            return None
        rendered.add(text)
    return alias, target.column, rendered


def _carry(aliases, inner, values) -> None:
    """Copy known single values across join columns until nothing changes."""
    # The join columns compared alike, found once (not per pass): only
    # between columns compared alike: a generic relation joins an integer id
    # to a text object_pk ("5" is not 5).
    links = []
    for alias, join in aliases.items():
        parent = getattr(join, "parent_alias", None)
        fields = getattr(join, "join_fields", None)
        if parent is None or not fields:
            continue
        both_inner = alias in inner and parent in inner
        for parent_field, child_field in fields:
            kind = _kind(parent_field)
            if kind is None or kind != _kind(child_field):
                continue
            links.append((alias, parent, parent_field.column, child_field.column, both_inner))
    changed = bool(links)
    while changed:
        changed = False
        for alias, parent, parent_col, child_col, both_inner in links:
            known = values.get(parent, {}).get(parent_col)
            if known and child_col not in values.get(alias, {}):
                values.setdefault(alias, {})[child_col] = set(known)
                changed = True
            if not both_inner:
                continue  # never carry out of an outer-joined alias
            known = values.get(alias, {}).get(child_col)
            if known and parent_col not in values.get(parent, {}):
                values.setdefault(parent, {})[parent_col] = set(known)
                changed = True


def _conditions(cols: dict[str, set[str]], max_combos: int) -> Conditions | None:
    cols = dict(cols)
    while cols:
        size = 1
        for v in cols.values():
            size *= len(v)
        if size <= max_combos:
            break
        del cols[max(cols, key=lambda c: len(cols[c]))]  # coarser, never wrong
    if not cols:
        return None
    columns = tuple(sorted(cols))
    combos = [tuple(c) for c in product(*(sorted(cols[c]) for c in columns))]
    return Conditions(columns, combos)


def _allowed_columns(query, fields) -> set[tuple[str, str]]:
    """(table, column) pairs named by ``.cache("user", "message__sender")``."""
    allowed = set()
    for path in fields:
        model = query.model
        parts = path.split("__")
        for i, name in enumerate(parts):
            try:
                field = model._meta.get_field(name if name != "pk" else model._meta.pk.name)
            except Exception:
                break
            last = i == len(parts) - 1
            column = getattr(field, "column", None)
            if last:
                if column is not None:
                    allowed.add((model._meta.db_table, column))
                    target = getattr(field, "target_field", None)
                    if target is not None and getattr(field, "many_to_one", False):
                        # user and user__id name the same value
                        allowed.add((target.model._meta.db_table, target.column))
                break
            if field.related_model is None:
                break
            if column is not None:
                allowed.add((model._meta.db_table, column))
            model = field.related_model
    return allowed


def _subquery_tables(query) -> set[str]:
    """Tables of every query nested anywhere in ``query``."""
    found: set[str] = set()
    stack: list = [query.where, *query.annotations.values()]
    stack.extend(e for e in (*query.order_by, *(query.select or ())) if not isinstance(e, str))
    if isinstance(query.group_by, tuple):
        stack.extend(query.group_by)
    seen = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Query):
            found.update(j.table_name for j in node.alias_map.values())
            stack.extend([node.where, *node.annotations.values(), *node.combined_queries])
            stack.extend(e for e in (*node.order_by, *(node.select or ()))
                         if not isinstance(e, str))
            continue
        inner = getattr(node, "query", None)
        if isinstance(inner, Query):
            stack.append(inner)
        if hasattr(node, "children"):
            stack.extend(node.children)
        if isinstance(node, (Exact, In, IsNull)) or hasattr(node, "rhs"):
            rhs = getattr(node, "rhs", None)
            if rhs is not None and not isinstance(rhs, (str, bytes, int, float)):
                stack.append(rhs)
        if hasattr(node, "get_source_expressions"):
            try:
                stack.extend(e for e in node.get_source_expressions() if e is not None)
            except Exception:
                pass
    return found
