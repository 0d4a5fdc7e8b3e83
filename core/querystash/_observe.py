"""What the read path tells whoever watches: reads not served and why, and a
per-context record of every read and memoized call (``explain()``, the
debug-toolbar panel).

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

from . import _capture, _reasons
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


def memo_skipped(rt, kind: str, label: str, key: str, reason: str, detail: str = "") -> None:
    """A memoized call not served and not stored (``kind``: memo_veto or
    memo_bypass): the DEBUG log line, and the Event. ``reason``: a bypass's
    reason code, or a veto's reason as ``memoize_stats()`` counts it."""
    if logger.isEnabledFor(logging.DEBUG):
        words = _reasons.words(reason)
        logger.debug("querystash: %s %s: %s%s%s", kind, label or "?", reason,
                     f" ({words})" if words != reason else "", f": {detail}" if detail else "")
    if rt.observers:
        rt.emit(kind, label, key, reason=reason, detail=detail)


def memo_read(rt, call: tuple[str, str], compiler, result_type, op: str, compiled, seen: list,
              vetoed: str | None) -> None:
    """A query run inside the miss of the memoized call ``call`` (label,
    key), to the recorder of this context (called only while one runs):
    ``seen`` holds its QueryInfo and tags when the capture built them;
    ``vetoed``, the call's veto reason when this read is the one that set it."""
    recorder = recording.get()
    if recorder is None:
        return
    info = seen[0] if seen else _info(rt, compiler, result_type, op, compiled)
    if info is not None:
        recorder.memo_read(call, info, seen[1] if len(seen) > 1 else (), vetoed or "")


def _info(rt, compiler, result_type, op: str, compiled=None) -> QueryInfo | None:
    """The read as a QueryInfo, for a read vetoed before the read path
    compiled it; None when no query runs (an empty ``IN ()``...).
    ``compiled``: its (sql, params), when already known."""
    try:
        sql, params = compiled if compiled is not None else compiler.as_sql()
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


def memo_looking(key: str) -> None:
    """A memoized call is about to look ``key`` up (only called while
    someone observes): its time, hit or miss, counts from here."""
    recorder = recording.get()
    if recorder is not None:
        recorder.memo_lookup = (key, time.perf_counter())


def route(event: Event) -> None:
    """The process-wide observer while recorders run: each event to the
    recorder of the context it happened in."""
    recorder = recording.get()
    if recorder is not None:
        recorder.event(event)


#: the memoized events that end a lookup (``memo_looking``)
_LOOKUP_ENDS = frozenset({"memo_hit", "memo_miss", "memo_bypass"})

#: seconds a miss of a key took (its query and fill), to tell what later hits
#: of the key saved; bounded, oldest dropped first
_miss_seconds: dict[str, float] = {}
_MISS_LIMIT = 10_000


class Read:
    """One ORM read, as a recorder saw it."""

    __slots__ = ("outcome", "reason", "detail", "label", "op", "sql", "params", "alias",
                 "tables", "key", "tags", "filled", "stale", "seconds", "saved", "call",
                 "memo", "_start")

    def __init__(self, info: QueryInfo | None, label: str = "") -> None:
        #: hit / miss / veto / bypass; "memo": run on the database inside a
        #: memoized call's miss (tracked by its capture, not cached per query)
        self.outcome = "pending"
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
        #: the number (from 1) of the memoized call it ran in
        #: (``Recorder.calls``), and that call's label; None and ""
        #: for a read of no memoized call's miss
        self.call: int | None = None
        self.memo = ""
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
                "saved": self.saved, "call": self.call, "memo": self.memo}

    def __repr__(self) -> str:
        return f"<Read {self.outcome} {self.label} {self.op} {self.reason}>"


class Call:
    """One memoized call (``querystash.memoize``, ``{% memoize %}``), as a
    recorder saw it."""

    __slots__ = ("number", "label", "key", "tags", "outcome", "reason", "detail", "filled",
                 "reads", "seconds", "saved", "open", "_start")

    def __init__(self, number: int, label: str, key: str, outcome: str) -> None:
        self.number = number
        self.label = label
        self.key = key
        self.tags: tuple[str, ...] = ()
        #: hit / miss (filled or not) / veto / bypass
        self.outcome = outcome
        #: veto: the reason as ``memoize_stats()`` counts it; bypass: its code
        self.reason = ""
        self.detail = ""
        self.filled = False
        #: how many reads it ran (its miss's queries)
        self.reads = 0
        #: from its lookup (``memo_looking``): for a hit, the lookup; for a
        #: miss, the lookup, the call's run and its fill
        self.seconds: float | None = None
        #: for a hit, the miss time of its key when known
        self.saved: float | None = None
        #: a miss still running: its reads are filed under it
        self.open = False
        self._start = time.perf_counter()

    @property
    def words(self) -> str:
        return _reasons.words(self.reason) if self.reason else ""

    def as_dict(self) -> dict:
        return {"number": self.number, "label": self.label, "key": self.key,
                "tags": list(self.tags), "outcome": self.outcome, "reason": self.reason,
                "words": self.words, "detail": self.detail, "filled": self.filled,
                "reads": self.reads, "seconds": self.seconds, "saved": self.saved}

    def __repr__(self) -> str:
        return f"<Call {self.number} {self.outcome} {self.label} {self.reason}>"


class Recorder:
    """Every read and invalidation of one context (a request, an explain())."""

    def __init__(self) -> None:
        self.reads: list[Read] = []
        #: the tags of each invalidation sent, in order
        self.invalidations: list[tuple[str, ...]] = []
        #: every memoized call, in the order each began
        self.calls: list[Call] = []
        self._open: Read | None = None
        #: (key, when) of the last memoized lookup begun (``memo_looking``)
        self.memo_lookup: tuple[str, float] | None = None

    def reading(self, info: QueryInfo, key: str, tags) -> None:
        read = Read(info)
        read.key, read.tags = key, tuple(tags)
        self.reads.append(read)
        self._open = read

    def memo_read(self, call: tuple[str, str], info: QueryInfo, tags, vetoed: str) -> None:
        """A query of a memoized call's miss: a read of that call, not a
        per-query hit or miss."""
        read = Read(info)
        read.outcome = "memo"
        read.tags = tuple(tags)
        read.reason = vetoed
        self._file(read, call)
        self.reads.append(read)

    def _file(self, read: Read, call: tuple[str, str]) -> None:
        read.memo = call[0]
        found = self._running(call[1])
        if found is not None:
            read.call = found.number
            found.reads += 1

    def _running(self, key: str) -> Call | None:
        """The innermost memoized call still running under ``key``."""
        for call in reversed(self.calls):
            if call.open and call.key == key:
                return call
        return None

    def memo_event(self, event: Event) -> None:
        """A memoized call's event: its row in ``calls``."""
        kind, key = event.kind, event.key
        running = self._running(key) if key else None
        # the start of the lookup that this event ends, taken whatever the
        # event does with it: never left for a later call of the key
        started = self._looked_up(key) if kind in _LOOKUP_ENDS else None
        if kind == "memo_miss":
            if running is not None and running.outcome == "bypass":
                return  # the store is out (told first): the same call runs, unmemoized
            if running is not None:
                running.open = False  # an earlier call under the key that raised: over
            call = self._call(event, "miss")
            call.open = True
            call._start = started or call._start
            return
        if kind in ("memo_fill", "memo_veto") and running is not None:
            running.open = False
            running.seconds = time.perf_counter() - running._start
            if kind == "memo_fill":
                running.filled = True
                running.tags = tuple(event.tags)
                _remember_miss(key, running.seconds)
            elif running.outcome != "bypass":  # a bypass's reason stands
                running.outcome, running.reason, running.detail = \
                    "veto", event.reason, event.detail
            return
        if kind == "memo_fill":
            return  # a miss this recorder did not see start: not ours
        # a hit, a bypass, or a veto decided before the call ran (an argument)
        call = self._call(event, kind[len("memo_"):])
        call.reason, call.detail = event.reason, event.detail
        if kind == "memo_hit":
            call.tags = tuple(event.tags)
            call.saved = _miss_seconds.get(key)
            if started is not None:
                call.seconds = time.perf_counter() - started
        elif kind == "memo_bypass" and key:
            call.open = True  # the store is out: the call runs, a miss and a veto follow
            call._start = started or call._start

    def _looked_up(self, key: str) -> float | None:
        """When the lookup of ``key`` began, if it is the last one begun."""
        lookup, self.memo_lookup = self.memo_lookup, None
        return lookup[1] if lookup is not None and lookup[0] == key else None

    def _call(self, event: Event, outcome: str) -> Call:
        call = Call(len(self.calls) + 1, event.model, event.key, outcome)
        self.calls.append(call)
        return call

    def event(self, event: Event) -> None:
        kind = event.kind
        if kind == "invalidate":
            self.invalidations.append(tuple(event.tags))
            return
        if kind.startswith("memo_"):
            self.memo_event(event)
            return
        read = self._open
        if read is None or read.key != event.key:
            if kind not in ("veto", "bypass"):
                return  # a hit or miss this recorder did not see start: not ours
            # vetoed before its lookup: a read of its own
            read = Read(event.info, event.model)
            read.key, read.tags = event.key, tuple(event.tags)
            capture = _capture.active.get()
            if capture is not None and capture.call is not None:
                self._file(read, capture.call)  # run by a memoized call's miss
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
            _remember_miss(read.key, read.seconds)
        elif kind == "stale":
            read.stale = True
        elif kind in ("veto", "bypass"):
            read.outcome = kind
            read.reason = event.reason
            read.detail = event.detail
            self._open = None


def _remember_miss(key: str, seconds: float) -> None:
    if len(_miss_seconds) >= _MISS_LIMIT:
        try:
            del _miss_seconds[next(iter(_miss_seconds))]
        except (KeyError, RuntimeError, StopIteration):  # another thread's doing
            pass
    _miss_seconds[key] = seconds
