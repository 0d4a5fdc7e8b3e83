"""Site-wide counters: every process adds its counters to the store every
``STATS_FLUSH_SECONDS``, and ``manage.py querystash stats`` reads the sums.

Nothing here runs on the request path. Requests count in the process as
they always did (``_stats.Stats``, ``_memoize``'s counters); a daemon
thread takes what they counted since its last flush (the difference from
the figures it last took, so counting stays a plain ``+=``) and adds it to
the store with one ``Storage.incr_many`` call. The thread starts with the
runtime and again in a forked child (a thread does not survive ``fork``:
gunicorn's workers would never flush), where what the parent counted before
the fork is the parent's to send. At exit, one last flush.

A flush that fails keeps its batch for the next one: counts only add up, so
what is kept never grows beyond one number per counter. No flush calls a
store its breaker knows to be out, and a failed flush does not trip the
breaker (a refused ``incr`` is not a lost invalidation): requests see an
outage themselves.

Keys, under ``KEY_PREFIX`` (``qs``), versioned::

    qs:stats:v1:model:<app.Model>:<counter>     ("" model: store-wide counters)
    qs:stats:v1:memo:<label>:<counter>          (memoized functions, fragments)
    qs:stats:v1:h:<digest>                      (any name a key cannot hold as is)
    qs:stats:v1:flushes                         (flushes received)
    qs:stats:v1:n:<0..MAX_NAMES-1>              (the registry, below)

memcached cannot list keys, so the names counted are registered in a
bounded list of slots, each claimed with ``add_many`` (add if absent): a
model or memoized label with its standard counters, and each extra counter
(a veto reason) on its own. The command reads every slot, plus the
installed models, then every counter in one ``get_many``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

from ._stats import FIELDS as MODEL_FIELDS
from .storage import counts_site_wide

if TYPE_CHECKING:
    from ._runtime import Runtime

logger = logging.getLogger("querystash")

VERSION = "v1"
#: the memoized functions' standard counters (``_memoize.FIELDS``, copied:
#: this module must not import ``_memoize``, which imports the runtime)
MEMO_FIELDS = ("hits", "misses", "fills", "vetoed", "bypasses", "unpicklable", "corrupt",
               "errors")
STANDARD = {"model": frozenset(MODEL_FIELDS), "memo": frozenset(MEMO_FIELDS)}
#: registry slots: names beyond it are still counted, but only the installed
#: models among them are listed by the command
MAX_NAMES = 1024
#: how often a process checks that its names are still registered (a slot
#: lives ``STAMP_TIMEOUT``, and memcached may evict it)
RECHECK_SECONDS = 600.0
#: at exit, how long to wait for the last flush
EXIT_WAIT = 3.0

#: False: no background thread in this process (the test suite, whose tests
#: inspect the stores: they flush by hand)
background = True

_READABLE = re.compile(r"[A-Za-z0-9_.<>-]{0,150}")

# A name: (kind, label, counter), kind "model" or "memo".
Name = tuple[str, str, str]


def base(rt: Runtime) -> str:
    return f"{rt.config['KEY_PREFIX']}:stats:{VERSION}:"


def counter_key(prefix: str, name: Name) -> str:
    """The store key of one counter: readable where the name allows, else a
    digest (a readable label has no ':', so no two names share a key)."""
    kind, label, counter = name
    if _READABLE.fullmatch(label) and _READABLE.fullmatch(counter) and counter:
        return f"{prefix}{kind}:{label}:{counter}"
    digest = blake2b(json.dumps(name).encode(), digest_size=16).hexdigest()
    return f"{prefix}h:{digest}"


def flushes_key(prefix: str) -> str:
    return f"{prefix}flushes"


def slot_keys(prefix: str) -> list[str]:
    return [f"{prefix}n:{i}" for i in range(MAX_NAMES)]


def registered_as(name: Name) -> Name:
    """What registers ``name``: its label with the standard counters, or
    the name itself for any other counter."""
    kind, label, counter = name
    return (kind, label, "") if counter in STANDARD.get(kind, ()) else name


def interval(rt: Runtime | None) -> float:
    if rt is None:
        return 0.0
    try:
        return max(0.0, float(rt.config.get("STATS_FLUSH_SECONDS", 0) or 0))
    except (TypeError, ValueError):
        return 0.0


def unavailable(rt: Runtime | None) -> str | None:
    """Why this runtime's store keeps no site-wide counters, or None."""
    if rt is None or rt.storage is None:
        return "no store is configured"
    if not getattr(rt.storage, "shared", True):
        return ("the store is in-process, not shared between processes: each process "
                "counts alone (use redis or memcached for site-wide figures)")
    if not counts_site_wide(rt.storage):
        return f"the {rt.storage.name or type(rt.storage).__name__} store does not implement " \
               "Storage.incr_many"
    return None


# -- this process's side: collect and flush ---------------------------------------------


class Flusher:
    """What this process counted and has not yet added to the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # never held across a store call
        self._flushing = threading.Lock()  # one flush at a time
        #: the figures last taken, per name, and the Stats object they came from
        self.baseline: dict[Name, int] = {}
        self._source: Any = None
        #: counted, not yet in the store (a failed flush keeps its batch here)
        self.pending: Counter[Name] = Counter()
        #: registry names this process has seen, and those it found registered,
        #: per store (``_stores.Store.key``: override_settings can switch it)
        self.seen: set[Name] = set()
        self.registered: dict[Any, set[Name]] = {}
        self._checked = time.monotonic()
        self.failing = False
        self.full_warned = False
        #: flushes that reached the store (this process)
        self.sent = 0

    # -- taking the counts ----------------------------------------------------------

    def _collect_locked(self, rt: Runtime) -> None:
        """Add what was counted since the figures were last taken to ``pending``."""
        snapshot = _snapshot(rt)
        if rt.stats is not self._source:
            # A new Stats object (querystash installed again) starts at 0.
            self.baseline = {n: v for n, v in self.baseline.items() if n[0] != "model"}
            self._source = rt.stats
        baseline = self.baseline
        pending = self.pending
        for name, value in snapshot.items():
            delta = value - baseline.get(name, 0)
            if delta < 0:  # zeroed by hand since (reset_stats without resetting())
                delta = value
            if delta:
                pending[name] += delta
        self.baseline = snapshot

    @contextmanager
    def resetting(self, rt: Runtime) -> Iterator[None]:
        """Around zeroing this process's counters: what they held is still
        sent, and counting starts again from 0."""
        with self._lock:
            self._collect_locked(rt)
            yield
            self.baseline = {}

    def forget(self) -> None:
        """Drop everything pending and known (tests)."""
        with self._lock:
            self.pending.clear()
            self.baseline = {}
            self._source = None
            self.seen.clear()
            self.registered.clear()

    # -- sending them ---------------------------------------------------------------

    def flush(self, rt: Runtime | None) -> str:
        """Add what is pending to the store; returns what happened: "sent",
        "nothing", "busy", "store out", "failed" or why the store keeps no
        site-wide counters."""
        why = unavailable(rt)
        if why is not None:
            return why
        if not self._flushing.acquire(blocking=False):
            return "busy"
        try:
            return self._flush(rt)
        finally:
            self._flushing.release()

    def _flush(self, rt: Runtime) -> str:
        with self._lock:
            self._collect_locked(rt)
            batch = dict(self.pending)
        if not batch:
            return "nothing"
        if not rt.breaker.usable:
            return "store out"  # kept; requests see the outage, the breaker pays
        prefix = base(rt)
        deltas = {counter_key(prefix, name): n for name, n in batch.items()}
        deltas[flushes_key(prefix)] = 1
        try:
            rt.storage.incr_many(deltas)
        except Exception as exc:  # noqa: BLE001 - kept for the next flush
            if not self.failing:
                self.failing = True
                logger.warning("querystash: site-wide stats not flushed, kept for the next "
                               "flush: %r", exc)
            return "failed"
        with self._lock:
            pending = self.pending
            for name, n in batch.items():
                left = pending[name] - n
                if left > 0:
                    pending[name] = left
                else:
                    del pending[name]
            self.seen.update(registered_as(name) for name in batch)
        try:
            self._register(rt, prefix)
        except Exception:  # noqa: BLE001 - registered by a later flush
            pass
        # Counted as sent once the names are registered too: a process that
        # ends as soon as its counts are sent (``sent``) has them listed.
        self.sent += 1
        if self.failing:
            self.failing = False
            logger.warning("querystash: site-wide stats flushed again")
        return "sent"

    def _register(self, rt: Runtime, prefix: str) -> None:
        """Make sure every name this process counted is in the registry."""
        now = time.monotonic()
        if now - self._checked > RECHECK_SECONDS:
            self._checked = now
            self.registered.clear()
        store = rt.store.key if rt.store is not None else None
        registered = self.registered.setdefault(store, set())
        wanted = self.seen - registered
        if not wanted:
            return
        slots = slot_keys(prefix)
        values = rt.storage.get_many(slots)
        present = {_decode(v) for v in values if v is not None}
        registered |= wanted & present
        todo = sorted(wanted - present)
        free = [slot for slot, v in zip(slots, values, strict=True) if v is None]
        claims = {slot: _encode(name) for slot, name in zip(free, todo, strict=False)}
        if len(todo) > len(free) and not self.full_warned:
            self.full_warned = True
            logger.warning("querystash: the site-wide stats registry is full (%d names): "
                           "counters of more memoized functions are not listed", MAX_NAMES)
        if not claims:
            return
        existed = rt.storage.add_many(claims, rt.stamp_timeout)
        registered.update(name for slot, name in zip(free, todo, strict=False)
                               if slot not in existed)


def _snapshot(rt: Runtime) -> dict[Name, int]:
    """This process's counters now. ``list()`` of a dict's items is taken in
    one step under the GIL: requests may go on counting meanwhile."""
    from . import _memoize

    out: dict[Name, int] = {}
    for label, counts in list(rt.stats.by_model.items()):
        for counter, n in list(counts.items()):
            if n:
                out[("model", label, counter)] = n
    for label, counts in _memoize.stats().items():
        for counter, n in counts.items():
            if n:
                out[("memo", label, counter)] = n
    return out


def _encode(name: Name) -> bytes:
    return json.dumps(list(name)).encode()


def _decode(value: Any) -> Name | None:
    try:
        kind, label, counter = json.loads(bytes(value) if not isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None
    if isinstance(kind, str) and isinstance(label, str) and isinstance(counter, str):
        return (kind, label, counter)
    return None


flusher = Flusher()


# -- the background thread ----------------------------------------------------------------

_thread: threading.Thread | None = None
_thread_lock = threading.Lock()
_wake = threading.Condition()
_requested = 0
_completed = 0


def _current() -> Runtime | None:
    from . import _runtime

    return _runtime.current


def start() -> None:
    """Start this process's flushing thread if the settings ask for one and
    none runs (after the runtime is built, and in a forked child)."""
    global _thread
    if not background or interval(_current()) <= 0:
        return
    with _thread_lock:
        if _thread is not None and _thread.is_alive():
            return
        _thread = threading.Thread(target=_run, name="querystash-stats-flush", daemon=True)
        _thread.start()


def _run() -> None:
    global _completed
    while True:
        every = interval(_current())
        if every <= 0 or not background:
            return  # turned off; start() begins again when it is turned on
        with _wake:
            _wake.wait_for(_flush_asked, timeout=every)
            asked = _requested
        # Again after the wait: turned off meanwhile (the test suite turns
        # it off after the runtime, hence this thread, started) means no flush.
        if background and interval(_current()) > 0:
            try:
                flusher.flush(_current())
            except Exception:  # noqa: BLE001 - never let the thread die of one flush
                logger.exception("querystash: site-wide stats flush failed")
        with _wake:
            _completed = max(_completed, asked)
            _wake.notify_all()


def _flush_asked() -> bool:
    return _requested > _completed


def flush_now(timeout: float) -> bool:
    """Ask the thread for a flush and wait for it (at most ``timeout``
    seconds); without a thread, flush here. True once it ran."""
    global _requested
    thread = _thread
    if thread is None or not thread.is_alive():
        flusher.flush(_current())
        return True
    with _wake:
        _requested += 1
        target = _requested
        _wake.notify_all()
        return _wake.wait_for(lambda: _completed >= target, timeout=timeout)


def _at_exit() -> None:
    """The counts since the last flush, sent before the process ends (a
    worker recycled by ``max_requests``...). Waits on the flushing thread, a
    daemon still running at this point: a store that hangs holds the exit
    for ``EXIT_WAIT`` seconds at most."""
    rt = _current()
    if interval(rt) <= 0 or unavailable(rt) is not None:
        return
    thread = _thread
    if thread is None or not thread.is_alive():
        if background:
            try:
                flusher.flush(rt)
            except Exception:  # noqa: BLE001 - the process is ending
                pass
        return
    flush_now(EXIT_WAIT)


def _after_fork_in_child() -> None:
    """A forked child has no thread, and its counters hold the parent's
    counts, which the parent sends: start from them, and start a thread."""
    global _thread, _thread_lock, _wake, _requested, _completed
    _thread, _thread_lock, _wake = None, threading.Lock(), threading.Condition()
    _requested = _completed = 0
    flusher._lock = threading.Lock()
    flusher._flushing = threading.Lock()
    flusher.pending.clear()
    flusher.sent = 0
    rt = _current()
    try:
        flusher.baseline = _snapshot(rt) if rt is not None else {}
        flusher._source = rt.stats if rt is not None else None
        start()
    except Exception:  # noqa: BLE001 - a fork must go on: this child flushes nothing
        logger.exception("querystash: site-wide stats not started in a forked process")


import atexit  # noqa: E402 - registered once the functions exist

atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the command's side: read and reset ----------------------------------------------------


@dataclass
class SiteFigures:
    """The site-wide counters as the store holds them."""

    #: kind ("model", "memo") -> label -> counter -> sum
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    #: flushes the store received since the last reset
    flushes: int = 0


def _names(rt: Runtime, prefix: str, model_labels) -> list[Name]:
    """Every counter to read: the installed models' (listed or not), and
    those of every registered name."""
    known = {("model", label, "") for label in model_labels} | {("model", "", "")}
    for value in rt.storage.get_many(slot_keys(prefix)):
        name = _decode(value) if value is not None else None
        if name is not None:
            known.add(name)
    out = set()
    for kind, label, counter in known:
        if counter:
            out.add((kind, label, counter))
        elif kind == "model":
            out.update((kind, label, c) for c in MODEL_FIELDS)
        elif kind == "memo":
            out.update((kind, label, c) for c in MEMO_FIELDS)
    return sorted(out)


def read(rt: Runtime, model_labels) -> SiteFigures:
    """The site-wide counters: the registry, then every counter, in two
    ``get_many``. Raises the store's error."""
    prefix = base(rt)
    names = _names(rt, prefix, model_labels)
    values = rt.storage.get_many([*(counter_key(prefix, n) for n in names),
                                  flushes_key(prefix)])
    figures = SiteFigures(flushes=_int(values[-1]))
    for (kind, label, counter), value in zip(names, values, strict=False):
        n = _int(value)
        if n:
            figures.counts.setdefault(kind, {}).setdefault(label, {})[counter] = n
    return figures


def reset(rt: Runtime, model_labels) -> int:
    """Delete the site-wide counters; returns how many keys were deleted
    (present or not). The registry stays: the names are still counted.
    What a process took before and flushes after still comes in (at most
    one flush interval's worth)."""
    prefix = base(rt)
    keys = [counter_key(prefix, n) for n in _names(rt, prefix, model_labels)]
    keys.append(flushes_key(prefix))
    rt.storage.delete_many(keys)
    return len(keys)


def _int(value: Any) -> int:
    if value is None:
        return 0
    try:
        return int(value)  # an int, or its decimal bytes (redis, memcached)
    except (TypeError, ValueError):
        return 0
