"""A read that per-query caching leaves alone, run inside a memoized call.

A model not configured for per-query caching (or an operation its rule
leaves out) still decides a memoized result: its query gets its tags exactly
as a cached read would (relations, eligibility, strategies), and their
stamps are read — created if missing — *before* the query runs. The query
itself then runs on the database as usual, and nothing is filled for it.
"""

from __future__ import annotations

from django.core.exceptions import EmptyResultSet
from django.db.models.sql.constants import MULTI

from . import _capture, _stamps
from ._queryset import NOCACHE
from ._transactions import fill_is_safe, in_transaction, written_tags
from .events import QueryInfo
from .handle import GLOBAL_TAG


def read(rt, capture: _capture.Capture, original, compiler, result_type, chunked_fetch,
         chunk_size, spec, op: str):
    """Record the query's (tag, stamp) pairs in ``capture``, or veto it; then
    run Django's own ``execute_sql``."""
    _track(rt, capture, compiler, result_type, spec, op)
    token = _capture.compiling.set(True)
    try:
        return original(compiler, result_type, chunked_fetch, chunk_size)
    finally:
        _capture.compiling.reset(token)


def _track(rt, capture, compiler, result_type, spec, op) -> None:
    if capture.vetoed is not None:
        return  # nothing more to learn: no fill
    if spec is NOCACHE:
        capture.veto(_capture.NOCACHE)
        return
    query = compiler.query
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return  # no query runs: the answer depends on no table
    if not sql:
        return
    relations = rt.relations.read(sql, query, compiler)
    if relations.unwatched is not None:
        capture.veto(_capture.UNWATCHED)
        return
    info = QueryInfo(
        sql, tuple(params), compiler.using, "multi" if result_type == MULTI else "single", op,
        relations.tables, query.model, query, spec is not None, spec.fields if spec else (),
    )
    if not rt.eligible(info):
        capture.veto(_capture.INELIGIBLE)
        return
    tags = rt.query_tags(info)
    connection = compiler.connection
    if in_transaction(connection):
        written = written_tags(connection)
        if written and (GLOBAL_TAG in written or not written.isdisjoint(tags)):
            capture.veto(_capture.READ_YOUR_WRITES)
            return
        if not fill_is_safe(connection):
            capture.veto(_capture.SNAPSHOT)
            return
    stamps, failure = _stamps_before(rt, tags)
    capture.read(tags, stamps, failure is None, failure or "")


def _stamps_before(rt, tags: list[str]) -> tuple[list, str | None]:
    """The stamps of ``tags`` now (created where missing), and why they are
    not all known (None: they are); the store's outage rules as on the read path."""
    breaker = rt.breaker
    if breaker.in_outage or breaker.owes_global:
        breaker.ensure_payer()  # as on the read path: no store call from a request
        return [], _capture.STORE
    stamp_keys = [rt.stamp_prefix + tag for tag in tags]
    try:
        stamps = list(rt.storage.get_many(stamp_keys))
        ok = _stamps._ensure_stamps(rt, tags, stamp_keys, stamps)
    except Exception as exc:
        breaker.trip(rt, exc)
        return [], _capture.STORE
    return stamps, None if ok else _capture.STAMPS
