"""The plain objects passed to plugin callables: a query, a write, an event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class QueryInfo:
    """A read the core is deciding whether, and how, to cache."""

    sql: str
    params: tuple
    alias: str
    #: "multi" (rows), "single" (one row: count, exists, aggregate)
    shape: str
    #: get / fetch / count / exists / aggregate / iterator
    op: str
    #: the known tables the query reads (joins, subqueries, unions, ``extra()``
    #: and ``RawSQL`` included): what its cached rows depend on. A read of any
    #: other relation (a temporary table, a view no model maps, another
    #: schema's table) is never cached, so these are all it reads.
    tables: frozenset[str]
    model: Any = None
    query: Any = None
    #: True when the queryset asked with ``.cache()``
    explicit: bool = False
    #: field names given to ``.cache("user", ...)``
    fields: tuple[str, ...] = ()


@dataclass(slots=True)
class WriteEvent:
    """A statement that changed, or may have changed, data."""

    alias: str
    sql: str
    #: known tables named anywhere in ``sql``
    tables: frozenset[str]
    #: insert / update / delete / truncate / ddl / other
    kind: str
    #: True when the tables written cannot be known: invalidate everything
    everything: bool = False


@dataclass(slots=True)
class Event:
    """Something observers are told about."""

    #: hit / miss / fill / invalidate / error / stale (verify mode) / veto /
    #: bypass; for a memoized call (``querystash.memoize``, ``{% memoize %}``):
    #: memo_hit / memo_miss / memo_fill / memo_veto / memo_bypass
    kind: str
    #: the model's label; for a ``memo_*`` event, the memoized function's
    #: label (its ``querystash_memoized`` attribute, ``template:<name>``)
    model: str = ""
    key: str = ""
    tags: tuple[str, ...] = ()
    error: BaseException | None = None
    #: veto and bypass (and a miss that will not fill): the reason code, one
    #: of ``querystash.REASONS``. memo_bypass: off, disabled or store-out;
    #: memo_veto: the reason as ``querystash.memoize_stats()`` counts it
    #: ("raw SQL read"...; docs/memoize.md), or "unpicklable result"
    reason: str = ""
    #: more about the reason, for people (the relation, the check, the key
    #: function's words)
    detail: str = ""
    #: veto and bypass: the read, when it was compiled
    info: QueryInfo | None = None
