"""The read path: ``SQLCompiler.execute_sql`` through the stamp protocol.

The payload is the raw rows the database returned, before Django's
converters; Django builds instances from them exactly as it would from a
cursor. The hit path: decide (memoized per model / per SQL), compile, key,
one multi-get, verify the signature, unpickle.
"""

from __future__ import annotations

import logging

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models.sql.compiler import (
    SQLDeleteCompiler,
    SQLInsertCompiler,
    SQLUpdateCompiler,
)
from django.db.models.sql.constants import GET_ITERATOR_CHUNK_SIZE, MULTI, SINGLE
from django.db.models.sql.query import Query

from . import (
    _aggregation,
    _capture,
    _capture_reads,
    _compiled,
    _observe,
    _reasons,
    _runtime,
    _stamps,
)
from ._queryset import NOCACHE, current_op, spec_of
from ._switch import off as _disabled
from ._transactions import fill_is_safe, in_transaction, written_tags
from .events import QueryInfo
from .exceptions import Uncacheable

logger = logging.getLogger("querystash")

_WRITE_COMPILERS = (SQLInsertCompiler, SQLUpdateCompiler, SQLDeleteCompiler)


def make_execute_sql(original):
    def execute_sql(
        self, result_type=MULTI, chunked_fetch=False, chunk_size=GET_ITERATOR_CHUNK_SIZE
    ):
        rt = _runtime.current
        if (
            rt is None
            or not rt.enabled
            or _disabled.get()  # querystash.disabled(): reads only, writes still invalidate
            or (result_type != MULTI and result_type != SINGLE)
            or isinstance(self, _WRITE_COMPILERS)
        ):
            if not isinstance(self, _WRITE_COMPILERS):  # memoize: writes veto at the cursor
                _capture.veto(_capture.OFF if rt is None or not rt.enabled or _disabled.get()
                              else _capture.UNTRACKED)
                if rt is not None and _observe.on(rt):  # observe: say why
                    _observe.skipped(
                        rt, _reasons.OFF if not rt.enabled else _reasons.DISABLED
                        if _disabled.get() else _reasons.UNTRACKED,
                        self.query.model._meta.label if self.query.model else "",
                        _queryset_op(result_type, chunked_fetch),
                        compiler=self if result_type in (MULTI, SINGLE) else None,
                        result_type=result_type)
            return original(self, result_type, chunked_fetch, chunk_size)
        return _cached(rt, original, self, result_type, chunked_fetch, chunk_size)

    execute_sql.__querystash_original__ = original
    return execute_sql


def make_get_aggregation(original):
    """``Query.get_aggregation`` for ``install()``; ``original`` is Django's.
    A count() or aggregate() querystash caches, of a query shape planned
    before, is built from the plan (``_aggregation``), not by Django."""

    def get_aggregation(self, using, aggregate_exprs):
        rt = _runtime.current
        if (rt is None or not rt.enabled or _disabled.get() or type(self) is not Query
                or not aggregate_exprs or self.model is None
                # only reads querystash caches: their hits are what plans are for
                or _enabled_timeout(rt, spec_of(self), current_op.get() or "aggregate",
                                    self.model) is None):
            return original(self, using, aggregate_exprs)
        plans = rt.aggregations
        encoded = plans.encode(self, using, connections[using], aggregate_exprs)
        if encoded is None:
            return original(self, using, aggregate_exprs)
        plan = plans.get(encoded[0])
        if plan is _aggregation.UNKNOWN:
            return plans.learn(original, self, using, aggregate_exprs, encoded)
        if plan is None:
            return original(self, using, aggregate_exprs)
        if _compiled.CHECK:
            plans.check(original, self, using, aggregate_exprs, plan)
        _aggregation.apply(plan.changes, self)
        compiler = self.get_compiler(using, elide_empty=plan.elide_empty)
        compiler.__dict__[_aggregation.GIVEN] = (plan.shape, encoded[1], plan.refs)
        return _aggregation.finish(self, compiler)

    get_aggregation.__querystash_original__ = original
    return get_aggregation


def _cached(rt, original, compiler, result_type, chunked_fetch, chunk_size):
    query = compiler.query
    spec = spec_of(query)
    op = current_op.get()
    if op is not None:
        current_op.set(None)  # the operation's own query only, not what it triggers
    if chunked_fetch:
        op = "iterator"
    elif op is None:
        op = "fetch" if result_type == MULTI else "aggregate"
    model = query.model
    timeout = _enabled_timeout(rt, spec, op, model)
    capture = _capture.active.get()
    if capture is not None:  # memoize: a memoized call's miss tracks its reads itself
        # (so from here on no capture is active: the rest of the path reports none)
        return _capture_reads.read(rt, capture, original, compiler, result_type,
                                   chunked_fetch, chunk_size, spec, op, timeout is not None)
    if timeout is None:
        if _observe.on(rt):  # observe: which rung of the ladder said no
            _observe.skipped(rt, _enabled_timeout(rt, spec, op, model, why=True),
                             model._meta.label if model is not None else "", op,
                             compiler=compiler, result_type=result_type)
        return original(compiler, result_type, chunked_fetch, chunk_size)
    # A query of a shape compiled before: its SQL and parameters without
    # compiling (_compiled); else compile, and maybe remember the shape.
    shapes = rt.shapes
    # count()/aggregate() of a planned shape (_aggregation) give theirs
    encoded = compiler.__dict__.pop(_aggregation.GIVEN, None)
    if encoded is None:
        encoded = shapes.encode(compiler)
    elif _compiled.CHECK:
        _compiled.check_given(shapes, encoded, compiler)
    fast = None if encoded is None else shapes.get(encoded[0])
    if fast is not None:
        sql, params = fast.sql, shapes.params(fast, encoded[1])
        if _compiled.CHECK:
            _compiled.check(shapes, fast, compiler, sql, params)
        else:
            fast.use(compiler)  # the compiler and query as compiling leaves them
        relations = fast.relations
    else:
        before = None
        if encoded is not None and not shapes.known(encoded[0]):
            before, uncompiled = dict(compiler.__dict__), query.clone()
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:
            sql = None
        if not sql:
            return original(compiler, result_type, chunked_fetch, chunk_size)
        params = tuple(params)
        relations = rt.relations.read(sql, query, compiler)
        if before is not None:
            shapes.learn(encoded[0], encoded[2], encoded[1], sql, params, before, compiler,
                         relations, uncompiled)

    def run():
        if fast is not None:
            # A miss compiles after all: the shape's SQL is checked here,
            # before its rows could fill an entry under a wrong key.
            _compiled.confirm(shapes, encoded[0], compiler, sql, params)
        # Run Django's own execute_sql on the SQL already compiled: pinning
        # as_sql on this compiler instance saves compiling twice on a miss.
        compiler.as_sql = lambda *args, **kwargs: (sql, params)
        try:
            return _rows(original(compiler, result_type, chunked_fetch, chunk_size), result_type)
        finally:
            del compiler.as_sql

    def uncached():
        # A read that fills nothing: a remembered shape's SQL needs no check,
        # Django compiles it as it would without querystash.
        if fast is None:
            return run()
        return _rows(original(compiler, result_type, chunked_fetch, chunk_size), result_type)

    label = model._meta.label if model is not None else ""
    if relations.unwatched is not None:
        # It reads something whose writes querystash never sees (a temporary
        # table, a view, another schema): no invalidation could reach it.
        rt.stats.add(label, "vetoed")
        if _observe.on(rt):  # observe
            _observe.skipped(rt, _reasons.UNWATCHED, label, op, detail=str(relations.unwatched),
                             compiler=compiler, result_type=result_type)
        return _shape(uncached(), result_type, chunked_fetch)
    info = QueryInfo(
        sql, params, compiler.using, "multi" if result_type == MULTI else "single", op,
        relations.tables, model, query, spec is not None, spec.fields if spec else (),
    )
    if not rt.eligible(info):
        rt.stats.add(label, "vetoed")
        if _observe.on(rt):  # observe: which check, and why
            _observe.skipped(rt, _reasons.INELIGIBLE, label, op, info=info)
        return _shape(uncached(), result_type, chunked_fetch)
    try:
        key = rt.key_function(info)
    except Uncacheable as exc:
        # A key function's veto: e.g. a parameter the encoder cannot key exactly.
        rt.stats.add(label, "vetoed")
        if _observe.on(rt):  # observe
            _observe.skipped(rt, _reasons.UNKEYED, label, op, detail=str(exc.reason), info=info)
        return _shape(uncached(), result_type, chunked_fetch)
    tags = rt.query_tags(info)
    connection = compiler.connection
    can_fill = True
    if in_transaction(connection):
        written = written_tags(connection)
        if written and (_runtime.GLOBAL_TAG in written or not written.isdisjoint(tags)):
            # Read-your-writes: this transaction changed what the query reads.
            rt.stats.add(label, "bypasses")
            if _observe.on(rt):  # observe
                _observe.skipped(rt, _reasons.READ_YOUR_WRITES, label, op, info=info, key=key,
                                 tags=tags)
            return _shape(uncached(), result_type, chunked_fetch)
        can_fill = fill_is_safe(connection)
    if rt.observers:  # observe: the panel and explain() see which read this is
        _observe.reading(info, key, tags)
    try:
        result = _stamps.read(rt, key, tags, label, timeout, can_fill, run)
    except _compiled.Mismatch:
        # Nothing ran and nothing was filled: the read goes to the database.
        return original(compiler, result_type, chunked_fetch, chunk_size)
    return _shape(result, result_type, chunked_fetch)


def _enabled_timeout(rt, spec, op: str, model, why: bool = False):
    """Is caching enabled for this operation, before any SQL is compiled?
    ``.nocache()`` says no; a ``.cache()`` spec decides for its queryset (its
    timeout, else the model's, else the default); otherwise the model's
    ``MODELS`` rule does. Returns the entry's timeout, or None for no
    (``why``: the reason code instead of None, for observers)."""
    if spec is NOCACHE:
        return _reasons.NOCACHE if why else None
    rule = rt.rule(model) if model is not None else None
    if spec is not None:
        if op not in spec.ops:
            return _reasons.OP_NOT_ASKED if why else None
        return spec.timeout or (rule.timeout if rule else rt.timeout)
    if rule is None:
        return _reasons.NOT_CONFIGURED if why else None
    if op not in rule.ops:
        return _reasons.OP_NOT_ENABLED if why else None
    return rule.timeout


def _queryset_op(result_type, chunked_fetch) -> str:
    """The operation of a read that never reached ``_cached`` (for observers):
    peeked, not consumed, as the read path leaves it there."""
    op = current_op.get()
    if chunked_fetch:
        return "iterator"
    return op or ("fetch" if result_type == MULTI else "aggregate")


def _rows(result, result_type):
    """What Django's execute_sql returned, as the rows a cache entry holds."""
    if result_type == MULTI:
        return [row for chunk in result for row in chunk]
    return result


def _shape(result, result_type, chunked_fetch):
    """Rows back into what Django's execute_sql returns for ``result_type``."""
    if result_type != MULTI:
        return result
    chunks = [result] if result else []
    return iter(chunks) if chunked_fetch else chunks
