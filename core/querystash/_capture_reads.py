"""Every read a memoized call runs while it misses.

Its query gets its tags exactly as a cached read would (relations,
eligibility, strategies), and their stamps are read — created if missing —
*before* the query runs. The query itself then runs on the database, and
nothing is filled for it: the per-query cache is neither read nor filled
inside a memoized call's miss. A per-query lookup costs a store round trip
per query, more than many a query costs (SQLite, an indexed get), while the
capture needs each tag's stamp once per call: a stamp read before the call's
first query on its tag stands for every later query on it (a write landing
in between deletes that stamp, so the entry is dead at birth), and the
stamps the call's probe read (``Capture.seed``) stand for the first one. A
function whose tables the probe guessed right thus runs its queries with no
store call at all.

The per-query key function still has its say on the queries per-query
caching would key (``keyed``): one it refuses vetoes the fill.

While a recorder runs (the debug-toolbar panel, ``explain()``), each query
is handed to it as a read of the memoized call (``_observe.memo_read``), with
its SQL and tags; with nothing observing that costs one attribute test.
"""

from __future__ import annotations

from django.core.exceptions import EmptyResultSet
from django.db.models.sql.constants import MULTI

from . import _capture, _observe, _stamps
from ._queryset import NOCACHE
from ._transactions import fill_is_safe, in_transaction, written_tags
from .events import QueryInfo
from .exceptions import Uncacheable
from .handle import GLOBAL_TAG


def read(rt, capture: _capture.Capture, original, compiler, result_type, chunked_fetch,
         chunk_size, spec, op: str, keyed: bool):
    """Record the query's (tag, stamp) pairs in ``capture``, or veto it; then
    run Django's own ``execute_sql`` (on the SQL compiled here, not twice)."""
    if rt.observers:  # observe: a recorder lists the call's reads
        compiled = _observed(rt, capture, compiler, result_type, spec, op, keyed)
    else:
        compiled = _track(rt, capture, compiler, result_type, spec, op, keyed)
    token = _capture.compiling.set(True)
    if compiled is not None:
        compiler.as_sql = lambda *args, **kwargs: compiled
    try:
        return original(compiler, result_type, chunked_fetch, chunk_size)
    finally:
        _capture.compiling.reset(token)
        if compiled is not None:
            del compiler.as_sql


def _observed(rt, capture, compiler, result_type, spec, op, keyed) -> tuple | None:
    """``_track``, telling the recorder of this context (if any) the read:
    its QueryInfo and tags as ``_track`` built them, and the capture's veto
    reason when this read is the one that vetoed the call."""
    if capture.call is None or _observe.recording.get() is None:
        return _track(rt, capture, compiler, result_type, spec, op, keyed)
    before = capture.vetoed
    seen: list = []
    compiled = _track(rt, capture, compiler, result_type, spec, op, keyed, seen)
    _observe.memo_read(rt, capture.call, compiler, result_type, op, compiled, seen,
                       capture.vetoed if before is None else None)
    return compiled


def _track(rt, capture, compiler, result_type, spec, op, keyed,
           seen: list | None = None) -> tuple | None:
    """The query's (sql, params) when compiled here, else None. ``seen``
    (observing only) gets the read's QueryInfo, then its tags, when built."""
    if capture.vetoed is not None:
        return None  # nothing more to learn: no fill
    if spec is NOCACHE:
        capture.veto(_capture.NOCACHE)
        return None
    query = compiler.query
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return None  # no query runs: the answer depends on no table
    if not sql:
        return None
    compiled = (sql, params)
    relations = rt.relations.read(sql, query, compiler)
    if relations.unwatched is not None:
        capture.veto(_capture.UNWATCHED)
        return compiled
    info = QueryInfo(
        sql, tuple(params), compiler.using, "multi" if result_type == MULTI else "single", op,
        relations.tables, query.model, query, spec is not None, spec.fields if spec else (),
    )
    if seen is not None:
        seen.append(info)
    if not rt.eligible(info):
        capture.veto(_capture.INELIGIBLE)
        return compiled
    if keyed:
        try:
            rt.key_function(info)
        except Uncacheable:
            capture.veto(_capture.UNKEYED)
            return compiled
    tags = rt.query_tags(info)
    if seen is not None:
        seen.append(tags)
    connection = compiler.connection
    if in_transaction(connection):
        written = written_tags(connection)
        if written and (GLOBAL_TAG in written or not written.isdisjoint(tags)):
            capture.veto(_capture.READ_YOUR_WRITES)
            return compiled
        if not fill_is_safe(connection):
            capture.veto(_capture.SNAPSHOT)
            return compiled
    known, seed = capture.stamps, capture.seed
    missing = []
    for tag in tags:
        if tag not in known:
            stamp = seed.get(tag)
            if stamp is None:
                missing.append(tag)
            else:
                known[tag] = stamp
    if missing:
        stamps, failure = _stamps_before(rt, missing)
        capture.read(missing, stamps, failure is None, failure or "")
        if _stamps.checkpoint is not None:
            _stamps.checkpoint("capture_after_stamp_read")
    return compiled


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
