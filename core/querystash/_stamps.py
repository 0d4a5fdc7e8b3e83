"""The stamp protocol: validate on read, one multi-get per hit.

An entry stores the stamps of its tags as they were *before* its query ran.
It is served only if every stamp still exists and is unchanged; a write
deletes the stamps of its tags. A write that lands while a query runs thus
makes the late fill invalid at birth; a stamp lost to eviction is a miss.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _codec, _stores

# every entry depends on this tag: deleting its stamp invalidates everything
from .handle import GLOBAL_TAG

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("querystash")

#: test/fault-injection hook: called as ``checkpoint(name)`` at named points
#: of the miss path ("after_stamp_read", "before_fill"); never on a hit.
checkpoint: Callable[[str], None] | None = None



class Breaker:
    """After a store error, leave the store alone for ``cooldown`` seconds.

    An outage is logged once when it starts and once when a store call
    succeeds again, however many cooldowns it lasts.

    Invalidations that could not be delivered during an outage are not lost:
    every process that saw the outage — not only one whose own deletion
    failed, which may be idle or gone by then — deletes the global stamp,
    which every entry depends on, before it reads the store again. It tries
    that from a background thread every ``PAYER_INTERVAL`` seconds, before a
    store use at most every ``retry`` seconds (a request pays for a dead
    store's timeout), and once more at exit.

    There is one per store (``_stores.Store``): a store's debt follows it
    through configuration changes, and is paid before it is read again.
    """

    #: how often the background thread tries to pay a debt
    PAYER_INTERVAL = 0.1

    def __init__(self, cooldown: float = 5.0, retry: float = 1.0):
        self.cooldown = cooldown
        self.retry = retry
        self.open_until = 0.0
        self.next_payment = 0.0
        self.in_outage = False
        self.owes_global = False
        #: bumped by every trip: a payment clears only the debts it covered
        self.debts = 0
        self._lock = threading.Lock()  # never held across a store call
        self._paying = threading.Lock()
        self._payer_pid = 0  # the process whose background payer is running

    def owe(self) -> None:
        """An invalidation this store should have received did not reach it
        (or may not have): delete the global stamp before reading it again."""
        with self._lock:
            self.debts += 1
            self.owes_global = True

    def allows(self) -> bool:
        return time.monotonic() >= self.open_until

    def trip(self, rt: Runtime, exc: BaseException, *, lost_invalidation: bool) -> None:
        # Any outage may have swallowed some process's invalidations.
        with self._lock:
            self.debts += 1
            self.owes_global = True
            start_payer = self._payer_pid != os.getpid()
            if start_payer:
                self._payer_pid = os.getpid()
        if start_payer:
            threading.Thread(target=self._pay_while_idle, name="querystash-outage-debt",
                             daemon=True).start()
        rt.stats.add("", "errors")
        if not self.in_outage:
            self.in_outage = True
            logger.error("querystash: store error, using the database until it answers "
                         "(retrying every %.0fs): %r", self.cooldown, exc)
        self.open_until = time.monotonic() + self.cooldown
        if rt.observers:
            rt.emit("error", error=exc)

    def settle(self, rt: Runtime) -> bool:
        """Before using the store after an outage: pay the debt of lost
        invalidations. False if the store is still out (or being paid)."""
        now = time.monotonic()
        if self.owes_global and now >= self.next_payment:
            self.next_payment = now + self.retry  # a dead store: one timeout per retry
        elif not self.allows():
            return False
        if self.owes_global:
            try:
                return self._pay(rt)
            except Exception as exc:
                self.trip(rt, exc, lost_invalidation=True)
                return False
        return True

    def _pay(self, rt: Runtime | _stores.Store) -> bool:
        """Delete the global stamp for the debts owed now; True once nothing
        is owed. Raises the store's error. ``rt``: the runtime, or the
        store, whose breaker this is."""
        # One payment at a time, and never wait for one: a request thread
        # bypasses the store while another thread pays.
        if not self._paying.acquire(blocking=False):
            return False
        try:
            if self.owes_global:
                owed = self.debts
                _delete_global(rt)
                with self._lock:
                    if self.debts == owed:  # no invalidation was lost meanwhile
                        self.owes_global = False
        finally:
            self._paying.release()
        if self.owes_global:
            return False
        self.succeeded()
        return True

    def _pay_while_idle(self) -> None:
        """Background thread: tries to pay every ``PAYER_INTERVAL`` seconds
        while a debt is owed, busy or idle, so other processes are served
        what the outage failed to invalidate for as short a time as it can
        be: the first attempt that reaches the store after it comes back
        pays. A failed attempt costs only this thread's time; the requests
        that meet the outage count and log it."""
        from . import _runtime

        while True:
            time.sleep(self.PAYER_INTERVAL)
            rt = _runtime.current
            with self._lock:
                if not self.owes_global or rt is None or rt.breaker is not self \
                        or rt.storage is None:
                    self._payer_pid = 0  # a later trip starts a new payer
                    return
            try:
                self._pay(rt)
            except Exception:  # noqa: BLE001 - still out: the next attempt is shortly
                pass

    def pay_at_exit(self, rt: Runtime | _stores.Store) -> None:
        if self.owes_global and rt.storage is not None:
            try:
                _delete_global(rt)
            except Exception:
                logger.error("querystash: could not invalidate everything at exit after a "
                             "store outage; entries may outlive writes made during it")

    def succeeded(self) -> None:
        if self.in_outage:
            self.in_outage = False
            self.open_until = 0.0
            logger.warning("querystash: store reachable again")


def _delete_global(rt: Runtime | _stores.Store) -> None:
    rt.storage.delete_many([rt.stamp_prefix + GLOBAL_TAG])


def read(rt: Runtime, key: str, tags: list[str], model: str, timeout: int,
         can_fill: bool, run: Callable[[], Any]) -> Any:
    """Serve ``key`` from the store if valid, else ``run()`` and maybe fill."""
    breaker = rt.breaker
    if (breaker.in_outage or breaker.owes_global) and not breaker.settle(rt):
        rt.stats.add(model, "bypasses")
        return run()
    storage = rt.storage
    stamp_keys = [rt.stamp_prefix + tag for tag in tags]
    try:
        values = storage.get_many([key, *stamp_keys])
    except Exception as exc:
        breaker.trip(rt, exc, lost_invalidation=False)
        return run()
    if breaker.in_outage:
        breaker.succeeded()
    stamps = values[1:]
    blob = values[0]
    if blob is not None and None not in stamps:
        payload = _codec.decode(rt.secret, key, blob)
        if payload is not None and payload[0] == stamps:
            rt.stats.add(model, "hits")
            if rt.observers:
                rt.emit("hit", model, key, tags)
            if rt.verify and random.random() < rt.verify:
                _verify(rt, key, model, payload[1], run)
            return payload[1]
        if payload is None:
            rt.stats.add(model, "corrupt")
    rt.stats.add(model, "misses")
    if rt.observers:
        rt.emit("miss", model, key, tags)
    if checkpoint is not None:
        checkpoint("after_stamp_read")
    if can_fill:
        try:
            can_fill = _ensure_stamps(rt, tags, stamp_keys, stamps)
        except Exception as exc:
            breaker.trip(rt, exc, lost_invalidation=False)
            can_fill = False
    result = run()
    if can_fill:
        if checkpoint is not None:
            checkpoint("before_fill")
        _fill(rt, key, model, tags, timeout, stamps, result)
    return result


def _ensure_stamps(rt: Runtime, tags: list[str], stamp_keys: list[str], stamps: list) -> bool:
    """Create missing stamps (add = SET NX), re-reading those another process
    created first. Fills ``stamps`` in place; False if one cannot be known,
    or a pinned stamp (``InvalidationStrategy.stamp_value``) holds another value."""
    if not rt.pinning and None not in stamps:
        return True  # the usual cold miss: every stamp found, none pinned
    pinned = rt.stamp_values(tags, stamps)
    new = {
        k: pinned[i][0] if i in pinned else os.urandom(8)
        for i, (k, v) in enumerate(zip(stamp_keys, stamps, strict=True))
        if v is None
    }
    if new:
        existed = rt.storage.add_many(new, rt.stamp_timeout)
        if existed:
            lost = [k for k in new if k in existed]
            for k, v in zip(lost, rt.storage.get_many(lost), strict=True):
                new[k] = v
        for i, k in enumerate(stamp_keys):
            if stamps[i] is None:
                stamps[i] = new[k]
    for i, (value, strategy) in pinned.items():
        if stamps[i] != value:
            strategy.stamp_conflict(tags[i], stamps[i])
            return False
    return None not in stamps


def _fill(rt: Runtime, key: str, model: str, tags, timeout: int, stamps: list, result) -> None:
    try:
        blob = _codec.encode(rt.secret, key, (stamps, result))
    except Exception:  # a value pickle refuses (memoryview...): not cacheable
        rt.stats.add(model, "unpicklable")
        return
    try:
        rt.storage.set(key, blob, timeout)
    except Exception as exc:
        rt.breaker.trip(rt, exc, lost_invalidation=False)
        return
    rt.stats.add(model, "fills")
    if rt.observers:
        rt.emit("fill", model, key, tags)


def _verify(rt: Runtime, key: str, model: str, cached, run: Callable[[], Any]) -> None:
    fresh = run()
    if fresh != cached:
        rt.stats.add(model, "stale")
        logger.error("querystash: stale read detected for %s (key %s)", model, key)
        if rt.observers:
            rt.emit("stale", model, key)
        if rt.config.get("VERIFY_RAISE"):
            from .exceptions import StaleRead

            raise StaleRead(f"cached rows for {model} differ from the database (key {key})")


def invalidate(rt: Runtime, tags, model: str = "") -> None:
    """Delete the stamps of ``tags`` in the runtime's store and in every other
    store this process has used (``_stores``); remember the debt of a store
    that fails."""
    if not tags:
        return
    if rt.storage is not None:
        _invalidate_current(rt, tags, model)
    known = _stores.known
    if known and (len(known) > 1 or known[0] is not rt.store):
        _stores.fan_out(known, rt.store, tags)


def _invalidate_current(rt: Runtime, tags, model: str) -> None:
    breaker = rt.breaker
    if (breaker.in_outage or breaker.owes_global) and not breaker.settle(rt):
        breaker.owe()  # a payment running now may predate this write
        return
    try:
        rt.storage.delete_many([rt.stamp_prefix + tag for tag in tags])
    except Exception as exc:
        breaker.trip(rt, exc, lost_invalidation=True)
        return
    breaker.succeeded()
    rt.stats.add(model, "stamps_deleted", len(tags))
    if rt.observers:
        rt.emit("invalidate", model, tags=tags)
