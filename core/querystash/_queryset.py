"""``.cache()`` / ``.nocache()`` on every queryset and manager, and the
operation (get, count, ...) a query is run for."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Iterable

from .conf import DEFAULT_OPS, KNOWN_OPS

#: the ORM operation about to compile a query; consumed by the first read
current_op: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "querystash_op", default=None
)


#: the spec of the queryset whose prefetch_related lookups are running: they
#: follow what their queryset asked for unless they ask for themselves
prefetch_spec: contextvars.ContextVar[CacheSpec | None] = contextvars.ContextVar(
    "querystash_prefetch_spec", default=None
)


class CacheSpec:
    """What a queryset asked for; stored on its ``Query`` (clones copy it)."""

    __slots__ = ("ops", "timeout", "fields")

    def __init__(self, ops: frozenset[str], timeout: int | None, fields: tuple[str, ...]):
        self.ops = ops
        self.timeout = timeout
        self.fields = fields

    def __repr__(self) -> str:
        return f"CacheSpec(ops={sorted(self.ops)}, timeout={self.timeout}, fields={self.fields})"


NOCACHE = CacheSpec(frozenset(), None, ())


def cache(self, *fields: str, ops: str | Iterable[str] | None = None, timeout: int | None = None):
    """Cache this queryset's reads.

    :param fields: for invalidation plugins (querystash-fields): restrict the
        conditions used for invalidation to these field paths.
    :param ops: None (the default: every op, ``iterator`` included),
        ``"all"`` (every op but ``iterator``: ``conf.DEFAULT_OPS``, what a
        ``MODELS`` rule caches), or a list of get / fetch / count / exists /
        aggregate / iterator (``conf.KNOWN_OPS``).
    :param timeout: seconds; defaults to the model's or ``TIMEOUT``.
    """
    if ops is None:
        op_set = KNOWN_OPS
    elif ops == "all":
        op_set = DEFAULT_OPS
    else:
        op_set = frozenset([ops] if isinstance(ops, str) else ops)
        unknown = op_set - KNOWN_OPS
        if unknown:
            raise ValueError(
                f"unknown cache op(s) {sorted(unknown)}; choose from {sorted(KNOWN_OPS)}"
            )
    if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    clone = self._chain()
    clone.query._querystash = CacheSpec(op_set, timeout, fields)
    return clone


def nocache(self):
    """Never cache this queryset's reads."""
    clone = self._chain()
    clone.query._querystash = NOCACHE
    return clone


def manager_cache(self, *fields, **kwargs):
    return self.get_queryset().cache(*fields, **kwargs)


def manager_nocache(self):
    return self.get_queryset().nocache()


manager_cache.__doc__ = cache.__doc__
manager_nocache.__doc__ = nocache.__doc__


def with_op(op: str, method):
    """Wrap a QuerySet method so the query it runs knows its operation."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        token = current_op.set(op)
        try:
            return method(self, *args, **kwargs)
        finally:
            current_op.reset(token)

    wrapper.__querystash_original__ = method
    return wrapper


def with_prefetch_spec(method):
    """Wrap QuerySet._prefetch_related_objects: ``qs.cache().prefetch_related(...)``
    caches the prefetch queries too (and ``.nocache()`` keeps them out)."""

    @functools.wraps(method)
    def wrapper(self):
        spec = self.query.__dict__.get("_querystash")
        if spec is None:
            return method(self)
        token = prefetch_spec.set(spec)
        try:
            return method(self)
        finally:
            prefetch_spec.reset(token)

    return wrapper


def spec_of(query) -> CacheSpec | None:
    spec = query.__dict__.get("_querystash")
    if spec is None:
        inner = query.__dict__.get("inner_query")  # count()/aggregate() over a subquery
        if inner is not None:
            spec = inner.__dict__.get("_querystash")
        if spec is None:
            spec = prefetch_spec.get()
    return spec
