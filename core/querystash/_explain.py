"""``querystash.explain(queryset)``: what the read path decided for a queryset.

It does not re-derive the decision: it runs the queryset's operation (on a
copy, so the queryset's own result cache is untouched) with a recorder
active, and reports what the read path said while it ran. So the answer is
the read path's own, store outages and open transactions included — and a
miss fills the cache, exactly as the same read in your code would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import _observe, _reasons, _runtime
from ._observe import Read

_OPS: dict[str, Callable[[Any], Any]] = {
    "fetch": lambda qs: list(qs),
    "iterator": lambda qs: list(qs.iterator()),
    "get": lambda qs: qs.get(),
    "count": lambda qs: qs.count(),
    "exists": lambda qs: qs.exists(),
    "first": lambda qs: qs.first(),
    "explain": lambda qs: qs.explain(),
}


class Explanation:
    """The read path's decision for a queryset's operation.

    ``reads`` has one :class:`Read` per query the operation ran (a
    ``prefetch_related()`` adds one per lookup); the attributes below are
    those of the first, the queryset's own query.
    """

    def __init__(self, op: str, reads: list[Read], invalidations) -> None:
        self.op = op
        self.reads = reads
        self.invalidations = invalidations
        first = reads[0] if reads else None
        #: hit / miss / veto / bypass, "memo" (run by a memoized call's miss,
        #: not cached per query), or "none" when no query ran
        self.outcome: str = first.outcome if first else "none"
        #: whether the cache applies: served from it, or read and filled
        self.cached: bool = first.cached if first else False
        #: the reason code (``querystash.REASONS``); "" for a hit or a filled miss
        self.reason: str = first.reason if first else _reasons.EMPTY
        #: more about the reason: the relation, the check, the key function's words
        self.detail: str = first.detail if first else ""
        self.key: str = first.key if first else ""
        self.tags: tuple[str, ...] = first.tags if first else ()
        self.sql: str = first.sql if first else ""
        self.model: str = first.label if first else ""

    @property
    def words(self) -> str:
        """The reason, for people."""
        return _reasons.words(self.reason) if self.reason else ""

    def __str__(self) -> str:
        lines = []
        for read in self.reads or [None]:
            if read is None:
                lines.append(f"{self.op}: no query ran ({self.words})")
                continue
            if read.outcome == "hit":
                head = "cached: served from the cache"
            elif read.outcome == "memo":
                head = f"run by the memoized call {read.memo}'s miss (not cached per query)"
                if read.reason:
                    head += f": vetoed its fill ({read.reason})"
            elif read.outcome == "miss":
                head = "cached: a miss, filled" if read.filled else \
                    f"not filled: {read.reason} ({read.words})" if read.reason else \
                    "a miss, not filled"
            else:
                head = f"not cached ({read.outcome}): {read.reason} ({read.words})"
                if read.detail:
                    head += f": {read.detail}"
            lines.append(f"{read.label or '?'} {read.op}: {head}")
            if read.key:
                lines.append(f"  key:  {read.key}")
                lines.append(f"  tags: {', '.join(read.tags)}")
            if read.sql:
                lines.append(f"  sql:  {read.sql}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Explanation {self.op} {self.outcome} {self.reason or 'cached'}>"


def explain(queryset, op: str = "fetch") -> Explanation:
    """Run ``queryset``'s ``op`` (fetch, get, count, exists, first, iterator,
    explain) and say what the cache did with each query it ran: served,
    missed and filled, or not cached, with the reason code and its words,
    the key and the tags. The queryset itself is not evaluated (a copy is).

    ``queryset`` may also be a function of no arguments: it is called, and
    every read it makes is reported (``op`` is then only a label)."""
    if callable(queryset) and not hasattr(queryset, "_chain"):
        call = queryset
    else:
        try:
            run = _OPS[op]
        except KeyError:
            raise ValueError(f"op must be one of {sorted(_OPS)}, not {op!r}") from None
        model = queryset.model

        def call():
            try:
                run(queryset._chain())
            except (model.DoesNotExist, model.MultipleObjectsReturned):
                pass  # get() of nothing, or of too much: the read ran all the same

    with recorded() as recorder:
        call()
    if not recorder.reads and _runtime.current is None:
        recorder.reads.append(_not_running(op))
    return Explanation(op, recorder.reads, recorder.invalidations)


@contextmanager
def recorded() -> Iterator[_observe.Recorder]:
    """A recorder current in this context until the block exits, with the
    router watched meanwhile: every read and invalidation the block makes
    (``explain()``; the panel's recorder spans a request's two hooks instead)."""
    recorder = _observe.Recorder()
    token = _observe.recording.set(recorder)
    _runtime.watch(_observe.route)
    try:
        yield recorder
    finally:
        _runtime.unwatch(_observe.route)
        _observe.recording.reset(token)


def _not_running(op: str) -> Read:
    read = Read(None)
    read.outcome, read.reason, read.op = "bypass", _reasons.OFF, op
    return read
