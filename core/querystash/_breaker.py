"""The outage breaker: one per store, it keeps requests off a store that
failed, and makes sure invalidations lost during the outage are paid for
(the global stamp deleted) before the store is read again."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from .handle import GLOBAL_TAG

if TYPE_CHECKING:
    from . import _stores
    from ._runtime import Runtime

logger = logging.getLogger("querystash")


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
