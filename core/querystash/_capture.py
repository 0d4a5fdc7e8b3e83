"""What a memoized call read: the (tag, stamp) pairs of every query it ran,
or the reason it cannot be known (``querystash.memoize``, ``_memoize``).

The read and write paths report to the capture of the running context, if
any, at a few marked call sites; with no capture active that costs one
context-variable lookup per read. Everything a capture records was read
*before* the query it stands for ran, so a write committing after that
read deletes a stamp the memoized entry holds: the entry is dead at birth.

This module imports nothing from the package at import time: the read path,
the stamp protocol and the write path all import it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence

#: the capture of the memoized call running in this context (a contextvar:
#: it follows asyncio tasks and asgiref's sync_to_async threads)
active: contextvars.ContextVar[Capture | None] = contextvars.ContextVar(
    "querystash_capture", default=None
)
#: set while the read path runs a query it compiled itself (``_reads``): the
#: cursor's statement is then one the capture tracks, not raw SQL
compiling: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "querystash_compiling", default=False
)

# Veto reasons (the counters of ``manage.py querystash stats`` show them).
RAW_READ = "raw SQL read"
WRITE = "write inside the call"
UNWATCHED = "reads an unwatched relation"
INELIGIBLE = "ineligible query"
NOCACHE = ".nocache() query"
UNKEYED = "query the key function refused"
READ_YOUR_WRITES = "reads what the open transaction wrote"
SNAPSHOT = "query in a transaction that cannot fill"
STORE = "store unavailable"
STAMPS = "stamps could not be established"
CHANGED = "a stamp changed during the call"
UNTRACKED = "query the capture cannot track"
OFF = "caching off"
#: not a capture's veto: the result pickle refused (counted as ``unpicklable``,
#: told to observers as a veto so a miss never ends unexplained)
UNPICKLABLE = "unpicklable result"

#: statements through a cursor that read and write no data
_CONTROL = frozenset(("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN"))


class Capture:
    """The (tag -> stamp) pairs a memoized call depends on, or why none can be
    trusted (``vetoed``: the first reason).

    ``seed``: stamps read before the call began (by its probe), to stand for
    the call's first query on each of those tags instead of a store read of
    its own; a seeded stamp joins ``stamps`` only when a query reads its tag.
    """

    __slots__ = ("stamps", "vetoed", "seed", "call")

    def __init__(self) -> None:
        self.stamps: dict[str, bytes] = {}
        self.vetoed: str | None = None
        self.seed: dict[str, bytes] = {}
        #: (label, entry key) of the memoized call, set only while someone
        #: observes: the recorder files the call's reads under it
        self.call: tuple[str, str] | None = None

    def veto(self, reason: str) -> None:
        if self.vetoed is None:
            self.vetoed = reason

    def read(self, tags: Sequence[str], stamps: Sequence, ok: bool = True,
             reason: str = STAMPS) -> None:
        """A query on ``tags`` ran (or was served) under ``stamps``, read
        before it ran. ``ok`` false: they could not be established."""
        if not ok:
            self.veto(reason)
            return
        known = self.stamps
        for tag, stamp in zip(tags, stamps, strict=True):
            if stamp is None:  # a missing stamp is never a version
                self.veto(STAMPS)
                return
            seen = known.setdefault(tag, stamp)
            if seen != stamp:
                # Two queries saw two versions of one tag: a write landed
                # between them, and no single stamp describes the result.
                self.veto(CHANGED)

    def merge(self, inner: Capture) -> None:
        """A nested memoized call's capture becomes part of this one."""
        if inner.vetoed is not None:
            self.veto(inner.vetoed)
        self.read(list(inner.stamps), list(inner.stamps.values()))


def veto(reason: str) -> None:
    """Veto the active capture, if any (the read path's uncached branches)."""
    capture = active.get()
    if capture is not None:
        capture.veto(reason)


def statement(sql, rt) -> None:
    """A statement through a Django cursor, while a capture is active: SQL
    the read path did not compile (a raw cursor read, ``Model.objects.raw``)
    or a write. Either vetoes; savepoints and ``BEGIN`` do not. ``rt``: the
    live runtime (its ``finder`` tells a write), or None."""
    if compiling.get():
        return
    capture = active.get()
    if capture is None:
        return
    if not isinstance(sql, str):
        capture.veto(RAW_READ)
        return
    head = sql.lstrip()[:16].split(None, 1)
    if head and head[0].upper() in _CONTROL:
        return
    if rt is not None and rt.finder.write(sql) is not None:
        capture.veto(WRITE)
    else:
        capture.veto(RAW_READ)
