"""Django signals for what the cache does: a hit, a miss, a fill, an
invalidation, a stale read (verify mode); and for each memoized call
(``querystash.memoize``, ``{% memoize %}``): a hit, a miss, a fill, a veto,
a bypass.

They cost nothing until something connects: the dispatcher is an observer
of the read and write paths only while one of these signals has a receiver
(``connect`` watches it, the last ``disconnect`` stops), so with none a hit
pays one test of an empty list and no signal is ever built or sent.

Every signal is sent with ``sender`` the model class (None when the event
is not about one model: an invalidation) and the keyword arguments
``label`` (the model's label, "" for none), ``key`` (the entry's cache
key), ``tags`` (the tags of the entry, or those invalidated) and ``event``
(the :class:`querystash.Event`). The ``memo_*`` signals are sent with
``sender`` None and ``label`` the memoized function's label (its
``querystash_memoized`` attribute; ``template:<name>`` for a fragment).
"""

from __future__ import annotations

import threading

from django.apps import apps
from django.dispatch import Signal

from . import _runtime
from .events import Event


class _WatchedSignal(Signal):
    """A Signal whose receivers decide whether the dispatcher observes."""

    def connect(self, *args, **kwargs):
        super().connect(*args, **kwargs)
        _sync()

    def disconnect(self, *args, **kwargs):
        disconnected = super().disconnect(*args, **kwargs)
        _sync()
        return disconnected


#: an entry was served
cache_hit = _WatchedSignal()
#: no valid entry: the query runs (``cache_fill`` follows if it is stored)
cache_miss = _WatchedSignal()
#: a miss's rows were stored
cache_fill = _WatchedSignal()
#: a write deleted the stamps of ``tags``: every entry depending on one is dead
cache_invalidated = _WatchedSignal()
#: verify mode found a served entry that differed from the database
cache_stale = _WatchedSignal()
#: a memoized call was served from its entry
memo_hit = _WatchedSignal()
#: no valid entry for a memoized call: the function runs (``memo_fill`` or
#: ``memo_veto`` follows)
memo_miss = _WatchedSignal()
#: a memoized call's result was stored
memo_fill = _WatchedSignal()
#: a memoized call's result was not stored; ``event.reason`` says why
memo_veto = _WatchedSignal()
#: a memoized call not memoized this time (``event.reason``: off, disabled,
#: store-out)
memo_bypass = _WatchedSignal()

_BY_KIND = {"hit": cache_hit, "miss": cache_miss, "fill": cache_fill,
            "invalidate": cache_invalidated, "stale": cache_stale,
            "memo_hit": memo_hit, "memo_miss": memo_miss, "memo_fill": memo_fill,
            "memo_veto": memo_veto, "memo_bypass": memo_bypass}
#: the kinds about a memoized call, not a model: sent with ``sender`` None
_MEMO = frozenset(("memo_hit", "memo_miss", "memo_fill", "memo_veto", "memo_bypass"))

_lock = threading.Lock()
_watching = False


def _sync() -> None:
    """Observe while any signal has a receiver, and only then."""
    global _watching
    with _lock:
        wanted = any(signal.receivers for signal in _BY_KIND.values())
        if wanted and not _watching:
            _runtime.watch(dispatch)
        elif _watching and not wanted:
            _runtime.unwatch(dispatch)
        _watching = wanted


def dispatch(event: Event) -> None:
    """The observer: the event's signal, to its receivers."""
    signal = _BY_KIND.get(event.kind)
    if signal is None or not signal.receivers:
        return
    sender = None if event.kind in _MEMO else _model(event.model)
    signal.send(sender=sender, label=event.model, key=event.key, tags=event.tags, event=event)


def _model(label: str):
    if not label:
        return None
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        return None
