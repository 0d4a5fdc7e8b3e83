"""What the read path tells whoever watches: reads not served and why, and a
per-context record of every read (``explain()``, the debug-toolbar panel).

The read path calls in here only where a read leaves the cache (cheap next
to the query that follows) and, on the hit path, only when ``rt.observers``
is not empty: with nothing connected a hit pays one attribute test.

A :class:`Recorder` is made current with :data:`recording` (a context
variable: it follows asyncio tasks and ``sync_to_async`` threads); the one
process-wide observer :func:`route`, watched while any recorder runs
(``_runtime.watch``), hands each event to the recorder of the context it
happened in.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import TYPE_CHECKING

from django.core.exceptions import EmptyResultSet

from . import _reasons
from .events import QueryInfo

if TYPE_CHECKING:
    from .events import Event

logger = logging.getLogger("querystash")

MULTI = "multi"  # django.db.models.sql.constants.MULTI, without importing the ORM

#: the recorder of this context, if any
recording: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "querystash_recording", default=None
)


def on(rt) -> bool:
    """Does anyone want to know why a read left the cache?"""
    return bool(rt.observers) or logger.isEnabledFor(logging.DEBUG)


def skipped(rt, code: str, label: str, op: str, *, detail: str = "", info=None,
            compiler=None, result_type=MULTI, key: str = "", tags=()) -> None:
    """A read not served from the cache, for ``code``'s reason: the DEBUG log
    line, and an Event ("veto" or "bypass") to the observers. ``info``: the
    read, when the read path built it; else compiled here from ``compiler``
    when a recorder (the panel, explain()) wants its SQL: a second compile,
    which plain observers and signals do not pay."""
    if code == _reasons.INELIGIBLE and info is not None:
        code, detail = ineligible(rt, info)
    kind = _reasons.kind(code)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("querystash: %s %s%s: %s (%s)%s", kind, label or "?", f" {op}" if op else "",
                     code, _reasons.words(code), f": {detail}" if detail else "")
    if rt.observers:
        if info is None and compiler is not None and recording.get() is not None:
            info = _info(rt, compiler, result_type, op)
        rt.emit(kind, label, key, tags, reason=code, detail=detail, info=info)


def ineligible(rt, info: QueryInfo) -> tuple[str, str]:
    """(code, detail) of the first eligibility check that vetoes ``info``.
    A check may say why with a ``reason(info)`` method (the built-in one
    answers a code); otherwise the code is ``ineligible`` and the detail
    names the check."""
    for check in rt.checks:
        if check(info) is False:
            why = getattr(check, "reason", None)
            answer = why(info) if why is not None else None
            if answer in _reasons.REASONS:
                return answer, ""
            name = getattr(check, "__qualname__", None) or type(check).__qualname__
            return _reasons.INELIGIBLE, str(answer) if answer else name
    return _reasons.INELIGIBLE, ""


def _info(rt, compiler, result_type, op: str) -> QueryInfo | None:
    """The read as a QueryInfo, for a read vetoed before the read path
    compiled it; None when no query runs (an empty ``IN ()``...)."""
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return None
    except Exception:  # shown to people only: never let it break the read
        logger.debug("querystash: could not compile a vetoed read for observers", exc_info=True)
        return None
    if not sql:
        return None
    query = compiler.query
    try:
        tables = rt.relations.read(sql, query, compiler).tables
    except Exception:
        tables = frozenset()
    return QueryInfo(sql, tuple(params), compiler.using,
                     "multi" if result_type == MULTI else "single", op, frozenset(tables),
                     query.model, query)


def reading(info: QueryInfo, key: str, tags) -> None:
    """The read path is about to look ``key`` up (only called while someone
    observes): the recorder of this context, if any, opens its row."""
    recorder = recording.get()
    if recorder is not None:
        recorder.reading(info, key, tags)


def route(event: Event) -> None:
    """The process-wide observer while recorders run: each event to the
    recorder of the context it happened in."""
    recorder = recording.get()
    if recorder is not None:
        recorder.event(event)


#: seconds a miss of a key took (its query and fill), to tell what later hits
#: of the key saved; bounded, oldest dropped first
_miss_seconds: dict[str, float] = {}
_MISS_LIMIT = 10_000


class Read:
    """One ORM read, as a recorder saw it."""

    __slots__ = ("outcome", "reason", "detail", "label", "op", "sql", "params", "alias",
                 "tables", "key", "tags", "filled", "stale", "seconds", "saved", "_start")

    def __init__(self, info: QueryInfo | None, label: str = "") -> None:
        self.outcome = "pending"  # hit / miss / veto / bypass
        self.reason = ""
        self.detail = ""
        self.label = label or (info.model._meta.label if info and info.model else "")
        self.op = info.op if info else ""
        self.sql = info.sql if info else ""
        self.params = info.params if info else ()
        self.alias = info.alias if info else ""
        self.tables = tuple(sorted(info.tables)) if info else ()
        self.key = ""
        self.tags: tuple[str, ...] = ()
        self.filled = False
        self.stale = False
        #: for a hit, how long it took; for a filled miss, its query and fill
        self.seconds: float | None = None
        #: for a hit, the miss time of its key when known
        self.saved: float | None = None
        self._start = time.perf_counter()

    @property
    def cached(self) -> bool:
        """Whether the cache applies: served from it, or read and filled."""
        return self.outcome == "hit" or (self.outcome == "miss" and self.filled)

    @property
    def words(self) -> str:
        return _reasons.words(self.reason) if self.reason else ""

    def as_dict(self) -> dict:
        """Plain values only (debug-toolbar 6+ stores panel data as JSON)."""
        return {"outcome": self.outcome, "reason": self.reason, "words": self.words,
                "detail": self.detail, "label": self.label, "op": self.op, "sql": self.sql,
                "params": [repr(p) for p in self.params], "alias": self.alias,
                "tables": list(self.tables), "key": self.key, "tags": list(self.tags),
                "filled": self.filled, "stale": self.stale, "seconds": self.seconds,
                "saved": self.saved}

    def __repr__(self) -> str:
        return f"<Read {self.outcome} {self.label} {self.op} {self.reason}>"


class Recorder:
    """Every read and invalidation of one context (a request, an explain())."""

    def __init__(self) -> None:
        self.reads: list[Read] = []
        #: the tags of each invalidation sent, in order
        self.invalidations: list[tuple[str, ...]] = []
        self._open: Read | None = None

    def reading(self, info: QueryInfo, key: str, tags) -> None:
        read = Read(info)
        read.key, read.tags = key, tuple(tags)
        self.reads.append(read)
        self._open = read

    def event(self, event: Event) -> None:
        kind = event.kind
        if kind == "invalidate":
            self.invalidations.append(tuple(event.tags))
            return
        read = self._open
        if read is None or read.key != event.key:
            if kind not in ("veto", "bypass"):
                return  # a hit or miss this recorder did not see start: not ours
            # vetoed before its lookup: a read of its own
            read = Read(event.info, event.model)
            read.key, read.tags = event.key, tuple(event.tags)
            self.reads.append(read)
        now = time.perf_counter()
        if kind == "hit":
            read.outcome = "hit"
            read.seconds = now - read._start
            read.saved = _miss_seconds.get(read.key)
        elif kind == "miss":
            read.outcome = "miss"
            read.reason = event.reason
        elif kind == "fill":
            read.filled = True
            read.seconds = now - read._start
            if len(_miss_seconds) >= _MISS_LIMIT:
                try:
                    del _miss_seconds[next(iter(_miss_seconds))]
                except (KeyError, RuntimeError, StopIteration):  # another thread's doing
                    pass
            _miss_seconds[read.key] = read.seconds
        elif kind == "stale":
            read.stale = True
        elif kind in ("veto", "bypass"):
            read.outcome = kind
            read.reason = event.reason
            read.detail = event.detail
            self._open = None
