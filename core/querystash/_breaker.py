"""The outage breaker: one per store, it keeps requests off a store that
failed, and makes sure invalidations lost during the outage are paid for
(the global stamp deleted) before the store is read again.

Requests never wait on a store known to be out: while a debt is owed they
make no store call at all (reads go to the database, invalidations add to
the debt), and only a background thread talks to the store until it has
paid."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from ._tags import GLOBAL_TAG

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("querystash")


class Breaker:
    """The health and the debt of one store (``_stores.Store``, its ``store``).

    Any store error **trips** it: the error is counted and logged once per
    outage, and the store owes its global stamp. An outage may have
    swallowed invalidations — this process's, or another's that failed
    against the same store — so every process that saw it deletes the
    global stamp, which every entry depends on, before it reads the store
    again: not only one whose own deletion failed, which may be idle or gone.

    While a debt is owed the request path makes no store call
    (:attr:`usable` is False). A background thread, started whenever a debt
    is owed, tries to pay every ``PAYER_INTERVAL`` seconds; its first
    attempt that reaches the store ends the outage. At exit one more
    attempt is made.

    A debt is *lost* when an invalidation this process sent (or should have
    sent) to the store did not reach it; one owed only because an outage was
    seen is a precaution. Only a lost one left unpaid at exit is worth an
    error message.
    """

    #: how often the background thread tries to pay a debt
    PAYER_INTERVAL = 0.1

    def __init__(self, store: Any = None):
        #: what is paid: an object with ``storage`` and ``stamp_prefix`` (the
        #: ``_stores.Store`` this breaker belongs to); None for a runtime
        #: without a store, which has nothing to pay
        self.store = store
        self.in_outage = False
        self.owes_global = False
        #: an invalidation of this process did not reach the store (see above)
        self.lost = False
        #: bumped by every new debt: a payment clears only the debts it covered
        self.debts = 0
        #: the store was forgotten (``_stores``): its payer stops
        self.retired = False
        self._lock = threading.Lock()  # never held across a store call
        self._paying = threading.Lock()
        #: the background thread paying the debt (not alive in a forked child)
        self._payer: threading.Thread | None = None
        _breakers.add(self)

    @property
    def usable(self) -> bool:
        """May the request path call the store? False during an outage and
        while a debt is owed."""
        return not (self.in_outage or self.owes_global)

    def owe(self, *, lost: bool = True) -> None:
        """An invalidation this store should have received did not reach it
        (or may not have; ``lost=False``: it may lack writes made before this
        process knew it): delete the global stamp before reading it again."""
        with self._lock:
            self.debts += 1
            self.owes_global = True
            self.lost = self.lost or lost
            self._ensure_payer_locked()

    def trip(self, rt: Runtime, exc: BaseException) -> None:
        """A call to the store raised ``exc``: bypass the store until the
        background thread has paid the outage's debt."""
        with self._lock:
            self.debts += 1
            self.owes_global = True
            self._ensure_payer_locked()
        rt.stats.add("", "errors")
        if not self.in_outage:
            self.in_outage = True
            logger.error("querystash: store error, using the database until it answers "
                         "(retrying every %.1fs in the background): %r",
                         self.PAYER_INTERVAL, exc)
        if rt.observers:
            rt.emit("error", error=exc)

    def ensure_payer(self) -> None:
        """A debt is owed: make sure a thread is paying it (a forked worker
        inherits the debt but not the thread)."""
        payer = self._payer
        if payer is None or not payer.is_alive():
            with self._lock:
                if self.owes_global:
                    self._ensure_payer_locked()

    def _ensure_payer_locked(self) -> None:
        """Under ``_lock``: start the background payer unless one runs."""
        if self.store is None or self.retired:
            return  # nothing to pay, or nobody will read it again
        if self._payer is not None and self._payer.is_alive():
            return
        self._payer = threading.Thread(target=self._pay_in_background,
                                       name="querystash-outage-debt", daemon=True)
        self._start_payer()

    def _start_payer(self) -> None:
        self._payer.start()

    def pay(self) -> bool:
        """Delete the global stamp for the debts owed now; True once nothing
        is owed. Raises the store's error. Never called on the request path
        of a store known to be out: by the background thread, when a store
        is adopted, and at exit."""
        # One payment at a time, and never wait for one.
        if not self._paying.acquire(blocking=False):
            return False
        try:
            if self.owes_global:
                owed = self.debts
                _delete_global(self.store)
                with self._lock:
                    if self.debts == owed:  # no new debt meanwhile
                        self.owes_global = False
                        self.lost = False
        finally:
            self._paying.release()
        if self.owes_global:
            return False
        self.succeeded()
        return True

    def _pay_in_background(self) -> None:
        """Background thread: tries to pay every ``PAYER_INTERVAL`` seconds
        while a debt is owed, busy or idle, so other processes are served
        what the outage failed to invalidate for as short a time as it can
        be: the first attempt that reaches the store after it comes back
        pays. A failed attempt costs only this thread's time; the requests
        that meet the outage count and log it."""
        while True:
            time.sleep(self.PAYER_INTERVAL)
            with self._lock:
                if not self.owes_global or self.retired:
                    self._payer = None  # a later debt starts a new payer
                    return
            try:
                self.pay()
            except Exception:  # noqa: BLE001 - still out: the next attempt is shortly
                pass

    def pay_at_exit(self) -> None:
        """One last attempt; an error message only if an invalidation of this
        process was really lost and stays unpaid."""
        if not self.owes_global or self.store is None or self.store.storage is None:
            return
        try:
            _delete_global(self.store)
        except Exception as exc:  # noqa: BLE001 - the process is ending
            if self.lost:
                logger.error("querystash: could not invalidate everything at exit after a "
                             "store outage; entries may outlive writes made during it: %r",
                             exc)

    def succeeded(self) -> None:
        if self.in_outage:
            self.in_outage = False
            logger.warning("querystash: store reachable again")

    def retire(self) -> None:
        """The store is forgotten: stop paying (it is invalidated entirely
        if it is used again)."""
        self.retired = True

    def reset(self) -> None:
        """Forget the outage and the debt (tests: another process, which saw
        none)."""
        with self._lock:
            self.in_outage = self.owes_global = self.lost = False
            self.debts += 1  # a payment running now covers nothing


#: every live breaker, for the child of a fork (below)
_breakers: weakref.WeakSet[Breaker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock another thread held at fork() (the payer, mid-payment) stays held
    # forever in the child, where that thread does not exist: the child would
    # never pay its inherited debt, and a write's owe() would block on _lock.
    # The debt itself is inherited; ensure_payer starts the child's own payer.
    for breaker in list(_breakers):
        breaker._lock = threading.Lock()
        breaker._paying = threading.Lock()
        breaker._payer = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _delete_global(store: Any) -> None:
    store.storage.delete_many([store.stamp_prefix + GLOBAL_TAG])
