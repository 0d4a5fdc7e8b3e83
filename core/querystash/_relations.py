"""Every relation a read depends on, and whether querystash sees their writes.

A cached read stays right only while querystash sees every write to what it
read. It sees writes to *known* tables: registered models' tables (m2m
through tables included). A temporary table, a view or a table no model maps,
a table of another schema, a function selecting from any of those: their rows
change without a write querystash can tie to them, so a read touching one is
never cached, whatever else it joins.

The relations come from the query's structure where it has one: the tables of
``alias_map`` (``BaseTable``/``Join``), ``extra(tables=...)``, and the same for
every query nested in it (filters, annotations, ordering, ``Subquery``,
``Exists``, unions, ``FilteredRelation`` conditions, ``count()`` over a
subquery). SQL the ORM did not build from models (``RawSQL``, ``extra()``
fragments, expressions with SQL of their own) is read by :mod:`._sqlscan`,
which refuses what it cannot vouch for. Results are memoized per SQL string:
the SQL text names every relation the database reads, so the same text always
reads the same relations, and a repeated query pays one dict lookup.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Func, Q
from django.db.models.expressions import RawSQL
from django.db.models.query import QuerySet
from django.db.models.query_utils import FilteredRelation
from django.db.models.sql.datastructures import BaseTable, Join
from django.db.models.sql.query import Query
from django.db.models.sql.where import ExtraWhere

from . import _sqlscan
from ._sql import TableFinder

logger = logging.getLogger("querystash")

_MEMO_LIMIT = 8192
_PLAIN_FROM_ENTRIES = (Join, BaseTable)
_ATOMS = (str, bytes, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class Relations:
    """What one SQL string reads."""

    #: the known tables it reads: what its cached rows depend on
    tables: frozenset[str]
    #: ``None`` when every relation it reads is a known table; else why not
    #: (the first relation or fragment querystash cannot watch)
    unwatched: str | None = None


class RelationReader:
    """Reads, and memoizes per SQL string, the relations of compiled reads."""

    def __init__(self, known: Iterable[str], finder: TableFinder):
        self.known = frozenset(known)
        self._finder = finder
        self._memo: dict[str, Relations] = {}

    def read(self, sql: str, query: Query | None = None, compiler=None) -> Relations:
        """The relations ``sql`` reads; ``query`` (and its ``compiler``) is what
        it was compiled from, ``None`` for SQL without one (read as raw text)."""
        try:
            return self._memo[sql]
        except KeyError:
            pass
        try:
            if query is None:
                tables, reason = _sqlscan.scan(sql, self.known)
            else:
                tables, reason = _Walk(self.known, query, compiler).run()
        except Exception as exc:  # a query shape nobody foresaw: never fail the read
            logger.exception("querystash: reading the relations of %.300s failed", sql)
            tables, reason = set(), f"its relations could not be read ({exc!r})"
        # Known names anywhere in the text too: a tag too many costs a miss,
        # one too few would cost stale rows.
        result = Relations(frozenset(tables) | self._finder.tables(sql), reason)
        if reason is not None:
            logger.debug("querystash: not caching %.300s: %s", sql, reason)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[sql] = result
        return result


class _Walk:
    """One walk over a query tree, collecting tables until something unwatched."""

    def __init__(self, known: frozenset[str], query: Query, compiler):
        self.known = known
        self.top = query
        self.compiler = compiler
        self.tables: set[str] = set()

    def run(self) -> tuple[set[str], str | None]:
        # (node, the query it belongs to): custom SQL is compiled in its query
        stack: list[tuple[object, Query]] = [(self.top, self.top)]
        # id -> node: holding the node keeps its id from being reused by an
        # object built later in the walk (get_source_expressions() lists,
        # join restrictions)
        seen: dict[int, object] = {}
        while stack:
            node, owner = stack.pop()
            if isinstance(node, _ATOMS) or id(node) in seen:
                continue
            seen[id(node)] = node
            if isinstance(node, Query):
                reason = self._query(node, stack)
            elif isinstance(node, (list, tuple, set, frozenset)):
                stack.extend((child, owner) for child in node)
                continue
            elif isinstance(node, QuerySet):
                stack.append((node.query, owner))
                continue
            else:
                reason = self._expression(node, owner, stack)
            if reason is not None:
                return self.tables, reason
        return self.tables, None

    def _query(self, query: Query, stack: list) -> str | None:
        def push(*nodes):
            stack.extend((n, query) for n in nodes if n is not None)

        refcount = query.alias_refcount
        for alias, entry in query.alias_map.items():
            if not refcount.get(alias):
                continue  # not in the SQL (Django's compiler skips it too)
            cls = type(entry)
            if cls not in _PLAIN_FROM_ENTRIES and cls.as_sql not in (Join.as_sql, BaseTable.as_sql):
                return f"its FROM clause has a {cls.__qualname__}, whose SQL querystash cannot read"
            name = entry.table_name
            if name not in self.known:
                return (
                    f"reads {name!r}, which no registered model maps (a temporary table, "
                    "a view, another schema's table?)"
                )
            self.tables.add(name)
            push(entry.filtered_relation)
            join_field = getattr(entry, "join_field", None)
            if join_field is not None:
                try:
                    push(join_field.get_extra_restriction(entry.table_alias, entry.parent_alias))
                except Exception:
                    return f"the join to {name!r} has a restriction querystash cannot read"
        for name in query.extra_tables:
            if name not in self.known:
                return f"extra(tables=...) reads {name!r}, which no registered model maps"
            self.tables.add(name)
        for sql, _params in query.extra.values():
            reason = self._fragment(sql)
            if reason is not None:
                return reason
        for sql in query.extra_order_by:
            reason = self._fragment(sql)
            if reason is not None:
                return reason
        push(query.where, *query.annotations.values(), *query.combined_queries)
        push(*(e for e in query.order_by if not isinstance(e, str)))
        push(*(e for e in query.select or () if not isinstance(e, str)))
        if isinstance(query.group_by, tuple):
            push(*query.group_by)
        selected = getattr(query, "selected", None)  # Django >= 5.2
        if selected:
            push(*(e for e in selected.values() if not isinstance(e, (str, int))))
        push(getattr(query, "inner_query", None))  # count()/aggregate() over a subquery
        return None

    def _expression(self, node, owner: Query, stack: list) -> str | None:
        def push(*nodes):
            stack.extend((n, owner) for n in nodes if n is not None)

        if isinstance(node, RawSQL) and not _renders_itself(type(node)):
            return self._fragment(node.sql)
        if isinstance(node, ExtraWhere) and not _renders_itself(type(node)):
            for sql in node.sqls:
                reason = self._fragment(sql)
                if reason is not None:
                    return reason
            return None
        if isinstance(node, FilteredRelation):
            push(node.condition, getattr(node, "resolved_condition", None))
            return None
        if isinstance(node, Q):
            push(*node.children)  # (lookup, value) tuples and nested Q
            return None
        if _writes_own_sql(node):
            reason = self._compiled(node, owner)
            if reason is not None:
                return reason
        inner = getattr(node, "query", None)  # Subquery, Exists
        if isinstance(inner, (Query, QuerySet)):
            push(inner)
        push(*getattr(node, "children", ()))  # WhereNode
        for attr in ("lhs", "rhs"):  # lookups: rhs may be a query or a list
            value = getattr(node, attr, None)
            if not isinstance(value, _ATOMS):
                push(value)
        get_sources = getattr(node, "get_source_expressions", None)
        if get_sources is not None:
            push(*get_sources())
        return None

    def _fragment(self, sql: str) -> str | None:
        tables, reason = _sqlscan.scan(sql, self.known)
        self.tables |= tables
        return reason

    def _compiled(self, node, owner: Query) -> str | None:
        """SQL an expression writes itself: compile it where it stands, read the text."""
        name = type(node).__qualname__
        if self.compiler is None:
            return f"{name} writes its own SQL and there is no compiler to read it"
        try:
            if owner is self.top:
                compiler = self.compiler
            else:
                compiler = owner.get_compiler(connection=self.compiler.connection)
            sql, _params = compiler.compile(node)
        except Exception as exc:
            return f"{name} writes its own SQL, which querystash could not read ({exc!r})"
        reason = self._fragment(sql)
        if reason is not None:
            return f"{name}: {reason}"
        return None


def _writes_own_sql(node) -> bool:
    """An expression whose SQL is not Django's own: a class defined outside
    Django that renders itself, or a ``Func`` given its own function name or
    template."""
    if isinstance(node, Func) and (
        type(node) is Func or "function" in node.extra or "template" in node.extra
    ):
        return True
    return _renders_itself(type(node))


@functools.cache
def _renders_itself(cls: type) -> bool:
    """``as_sql`` or an ``as_<vendor>`` defined outside Django (or a ``Func``
    subclass naming its own function or template)."""
    if not hasattr(cls, "as_sql"):
        return False
    for attr in dir(cls):
        if attr == "as_sql" or (attr.startswith("as_") and attr[3:] in _VENDORS):
            if not _from_django(getattr(cls, attr)):
                return True
    if issubclass(cls, Func):
        for attr in ("function", "template"):
            owner = next((k for k in cls.__mro__ if attr in k.__dict__), None)
            if owner is not None and not _from_django(owner):
                return True
    return False


def _from_django(thing) -> bool:
    return (getattr(thing, "__module__", "") or "").startswith("django.")


_VENDORS = frozenset(("sqlite", "postgresql", "mysql", "oracle", "mariadb"))
