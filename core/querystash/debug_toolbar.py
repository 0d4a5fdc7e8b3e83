"""``QuerystashPanel``: a django-debug-toolbar panel (toolbar 5 and later).

Per request it lists every ORM read with what the cache did (hit, miss and
fill, bypass, veto) and, for each read not served, the reason in words; the
key and tags; what hits saved (the miss time of the same key, when this
process saw it); and the invalidations the request's writes sent. Each
memoized call (``querystash.memoize``, ``{% memoize %}``) has a row of its
own (hit, miss + fill, vetoed with the reason, bypassed), and the queries a
memoized call's miss ran are listed as reads of that call.

Add it to ``DEBUG_TOOLBAR_PANELS``::

    DEBUG_TOOLBAR_PANELS = [*debug_toolbar.settings.PANELS_DEFAULTS,
                            "querystash.debug_toolbar.QuerystashPanel"]

It records through ``_observe`` (a recorder per request, in a context
variable), so requests without the toolbar are not recorded, and with no
toolbar request running nothing observes the read path at all. What it
stores is plain JSON-able data: toolbar 6's serialisable stats store keeps it.
"""

from __future__ import annotations

from collections import Counter

from debug_toolbar.panels import Panel

from . import _observe, _runtime

#: the panel's labels for each outcome
OUTCOMES = {"hit": "hit", "miss": "miss", "fill": "miss + fill", "bypass": "bypass",
            "veto": "vetoed", "pending": "pending", "memo": "memoized call"}


class QuerystashPanel(Panel):
    """What querystash did with each read of the request."""

    title = "querystash"
    template = "querystash/debug_toolbar.html"
    is_async = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._recorder: _observe.Recorder | None = None
        self._token = None

    @property
    def nav_subtitle(self) -> str:
        counts = self.get_stats().get("counts")
        if not counts:
            return ""
        line = (f"{counts.get('hit', 0)} hits, {counts.get('fill', 0) + counts.get('miss', 0)}"
                f" misses, {counts.get('veto', 0) + counts.get('bypass', 0)} not cached")
        calls = self.get_stats().get("call_counts")
        if calls:
            line += f", {sum(calls.values())} memoized ({calls.get('hit', 0)} hits)"
        return line

    def enable_instrumentation(self) -> None:
        if self._recorder is not None:  # idempotent, as the toolbar asks
            return
        self._recorder = _observe.Recorder()
        self._token = _observe.recording.set(self._recorder)
        _runtime.watch(_observe.route)

    def disable_instrumentation(self) -> None:
        if self._token is None:
            return
        _runtime.unwatch(_observe.route)
        try:
            _observe.recording.reset(self._token)
        except ValueError:  # reset from another context than the one that set it
            _observe.recording.set(None)
        self._token = None

    def generate_stats(self, request, response) -> None:
        recorder = self._recorder or _observe.Recorder()
        self.record_stats(summary(recorder))


def summary(recorder: _observe.Recorder) -> dict:
    """The panel's data: plain values only (the toolbar may store it as JSON)."""
    reads, calls = [], []
    counts: Counter = Counter()
    call_counts: Counter = Counter()
    saved = 0.0
    unknown = 0
    # A read a memoized call's miss ran counts as "memo": it was neither
    # served from nor stored in the per-query cache.
    for read in [*recorder.reads, *recorder.calls]:
        row = read.as_dict()
        outcome = "fill" if read.outcome == "miss" and read.filled else read.outcome
        row["outcome"] = outcome
        row["outcome_label"] = OUTCOMES.get(outcome, outcome)
        row["ms"] = _ms(read.seconds)
        row["saved_ms"] = _ms(read.saved)
        if isinstance(read, _observe.Call):
            call_counts[outcome] += 1
            calls.append(row)
        else:
            counts[outcome] += 1
            reads.append(row)
        if read.outcome == "hit":
            if read.saved is None:
                unknown += 1
            else:
                saved += read.saved
    return {
        "reads": reads,
        "counts": dict(counts),
        "calls": calls,
        "call_counts": dict(call_counts),
        "saved_ms": _ms(saved),
        "unknown_saved": unknown,
        "invalidations": [sorted(tags) for tags in recorder.invalidations],
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
