"""The stores this process has used: a change of store strands no invalidation.

``override_settings(CACHES=...)`` or ``override_settings(QUERYSTASH=...)`` —
tests' everyday tool, and some sites' per-tenant switch — rebuilds the
runtime on another store. The entries filled in the store used before stay
there and are read again when the setting comes back. So the process keeps
every store it has used (a :class:`Store`: the storage and the stamp prefix,
which together say where stamps live) and every invalidation reaches all of
them: the runtime's own store as always, the others through :func:`fan_out`.

A store that misses an invalidation (it was down, or it is new to the
process, or it was dropped from the list) owes its global stamp: it is
deleted — everything in that store invalidated — before the store is read
again (the outage debt of ``_breaker.Breaker``, one per store).

In production nothing is overridden: one store, and the write path pays one
test of a one-element tuple.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

from ._breaker import Breaker

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("querystash")

#: stores kept at most; the least recently used beyond it is closed and
#: forgotten (if it comes back, it is invalidated entirely before use)
MAX_STORES = 8


class Store:
    """One place entries may live: a storage and the prefix of its stamps."""

    __slots__ = ("breaker", "key", "seen", "stamp_prefix", "storage")

    def __init__(self, key: Hashable, storage: Any, stamp_prefix: str):
        self.key = key
        self.storage = storage
        self.stamp_prefix = stamp_prefix
        #: stamp keys this process has read in the store and not deleted since:
        #: a hint only (another process may delete them; a read that finds
        #: one missing forgets it), deciding whether a read creates missing
        #: stamps in its own round trip (``_stamps._read_creating``)
        self.seen: set[str] = set()
        #: this store's health and outage debt: invalidations it missed
        self.breaker = Breaker(self)

    def __repr__(self) -> str:
        return f"<Store {getattr(self.storage, 'name', '') or type(self.storage).__name__} " \
               f"{self.stamp_prefix!r}>"


#: every store this process knows, least recently adopted first. Replaced,
#: never mutated: the write path reads it without a lock.
known: tuple[Store, ...] = ()
#: a runtime has existed: a store new to the process may lack its writes
started = False
_lock = threading.Lock()


def store_key(storage: Any, stamp_prefix: str) -> Hashable:
    """Same backend configuration and same stamp prefix: the same store
    (``Storage.identity``); a storage without an identity is a store of its own."""
    try:
        identity = storage.identity()
        hash(identity)
    except Exception:  # noqa: BLE001 - no usable identity: the object itself
        identity = None
    if identity is None:
        identity = ("object", id(storage))  # the record keeps it alive: no id reuse
    return (type(storage), identity, stamp_prefix)


def adopt(storage: Any, stamp_prefix: str, rt: Runtime | None = None) -> Store:
    """The record of the store a new runtime uses, made the most recent.

    A store this process already knows keeps its debt and takes the new
    storage object (the previous one is closed). A new one, unless it is
    the process's first, owes its global stamp — writes made before it was
    known never reached it — which is deleted now if the store answers, else
    by the breaker's background thread (the failure is then an outage of
    ``rt``, the runtime adopting it: counted and logged)."""
    global known
    key = store_key(storage, stamp_prefix)
    to_close = []
    with _lock:
        others = [s for s in known if s.key != key]
        store = next((s for s in known if s.key == key), None)
        new = store is None
        if new:
            store = Store(key, storage, stamp_prefix)
            if started:
                store.breaker.owe(lost=False)
        elif store.storage is not storage:
            to_close.append(store.storage)
            store.storage = storage
        while len(others) >= MAX_STORES:
            to_close.append(others.pop(0))
        known = (*others, store)  # before the deletion: later writes reach it
    for old in to_close:
        if isinstance(old, Store):
            old.breaker.retire()
            old = old.storage
        _close(old)
    if new and store.breaker.owes_global:
        # Paid now rather than by the background thread, so that the first
        # reads need not go to the database (a store known to be out is
        # never called here: this one is new).
        try:
            store.breaker.pay()
        except Exception as exc:  # still owed: the background thread pays
            if rt is not None:
                store.breaker.trip(rt, exc)
    return store


def forget_others(keep: Store | None) -> None:
    """Close and forget every store but ``keep`` (the test suite starts each
    test as production runs: one store). Any of them used again is
    invalidated entirely first."""
    global known
    with _lock:
        dropped = [s for s in known if s is not keep]
        known = (keep,) if keep is not None and keep in known else ()
    for store in dropped:
        store.breaker.retire()
        _close(store.storage)


def close_all() -> None:
    """Close and forget every store (``uninstall()``)."""
    forget_others(None)


def _close(storage: Any) -> None:
    try:
        storage.close()
    except Exception:
        logger.exception("querystash: closing a storage failed")


def fan_out(stores: Iterable[Store], current: Store | None, tags) -> None:
    """Deliver the invalidation of ``tags`` to every store but ``current``.

    A store that owes a debt is not called (the write owes too, paid by the
    breaker's background thread); one that fails to take it owes its global
    stamp, deleted before the store is read again."""
    for store in stores:
        if store is current:
            continue
        breaker = store.breaker
        if breaker.in_outage or breaker.owes_global:
            # This write too: a payment already running may predate it.
            breaker.owe()
            continue
        keys = [store.stamp_prefix + tag for tag in tags]
        store.seen.difference_update(keys)
        try:
            store.storage.delete_many(keys)
        except Exception as exc:
            logger.warning("querystash: %r, a store this process used before, missed an "
                           "invalidation; everything in it is invalidated before it is "
                           "read again: %r", store, exc)
            breaker.owe()


def pay_at_exit() -> None:
    """The last chance for every store's debt (the breakers' background
    threads are daemons: they die with the interpreter)."""
    for store in known:
        store.breaker.pay_at_exit()


atexit.register(pay_at_exit)
