"""The built-in in-process store: what a ``LocMemCache`` alias becomes.

Through Django's ``LocMemCache`` a hit pickled the signed entry a second time,
took the cache's lock once per key and re-derived each key's name. Values
that never leave the process need none of that, so for a process-local
``CACHES`` alias the core keeps its entries and stamps here instead:

- one lock per call (``get_many`` of entry + stamps is one acquisition), so
  threads share it safely;
- every key has a deadline (``timeout`` seconds from ``set``/``add``); an
  expired key is absent, and is dropped when next touched;
- at most ``max_entries`` keys (the alias's ``OPTIONS["MAX_ENTRIES"]``,
  Django's default 300 otherwise): past it, the least recently used key is
  evicted — a stamp too, which is only a miss (fail closed);
- ``add_many`` stores a key only where none (unexpired) exists.

Values are kept as objects, not bytes: the read path stores an entry built by
:func:`freeze` and gets it back through :func:`thaw`. Nobody outside the
process can plant a value, so there is nothing to sign; what a caller gets is
never the stored object itself where it could be mutated (see ``freeze``).
Like ``LocMemCache``, aliases with the same ``LOCATION`` share one store.
"""

from __future__ import annotations

import datetime
import decimal
import math
import pickle
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from .storage import Storage

#: Django's LocMemCache default for MAX_ENTRIES
DEFAULT_MAX_ENTRIES = 300

#: value types with no mutable state: rows made only of these are handed out
#: as they are (a fresh list of the same tuples); exact types, not subclasses
_IMMUTABLE = frozenset({
    type(None), bool, int, float, complex, str, bytes, decimal.Decimal,
    datetime.datetime, datetime.date, datetime.time, datetime.timedelta, uuid.UUID,
})


class LocalStorage(Storage):
    """A bounded, thread-safe, in-process key-value store with deadlines."""

    name = "django"
    shared = False

    def __init__(self, location: str = "", max_entries: int = DEFAULT_MAX_ENTRIES,
                 alias: str = "default", clock: Callable[[], float] = time.monotonic):
        self.location = location
        self.alias = alias
        self.max_entries = max(1, int(max_entries))
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> (deadline, value), least recently used first
        self._data: OrderedDict[str, tuple[float, object]] = OrderedDict()

    def identity(self):
        return ("querystash.local", self.location)

    def get_many(self, keys):
        now = self._clock()
        data = self._data
        out = []
        with self._lock:
            for key in keys:
                item = data.get(key)
                if item is None:
                    out.append(None)
                elif item[0] <= now:
                    del data[key]
                    out.append(None)
                else:
                    data.move_to_end(key)
                    out.append(item[1])
        return out

    def add_many(self, mapping, timeout):
        deadline = self._deadline(timeout)
        now = self._clock()
        data = self._data
        existed = set()
        with self._lock:
            for key, value in mapping.items():
                item = data.get(key)
                if item is not None and item[0] > now:
                    existed.add(key)
                    continue
                self._put(key, deadline, value)
        return existed

    def set(self, key, value, timeout):
        deadline = self._deadline(timeout)
        with self._lock:
            self._put(key, deadline, value)

    def delete_many(self, keys):
        data = self._data
        with self._lock:
            for key in keys:
                data.pop(key, None)

    def incr_many(self, mapping):
        # Counters never expire; an expired or non-int value counts as 0.
        now = self._clock()
        data = self._data
        with self._lock:
            for key, delta in mapping.items():
                item = data.get(key)
                old = item[1] if item is not None and item[0] > now else 0
                self._put(key, math.inf, (old if type(old) is int else 0) + delta)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def keys(self) -> list[str]:
        """The keys held now, expired ones included until they are touched."""
        with self._lock:
            return list(self._data)

    def deadline(self, key: str) -> float | None:
        """When ``key`` expires on this store's clock (None: absent)."""
        with self._lock:
            item = self._data.get(key)
        return None if item is None else item[0]

    def stats(self):
        return {"backend": "querystash in-process store", "cache alias": self.alias,
                "location": self.location, "keys": len(self._data),
                "max entries": self.max_entries, "shared between processes": False}

    def _deadline(self, timeout) -> float:
        if timeout is None:
            return math.inf
        return self._clock() + timeout

    def _put(self, key, deadline, value) -> None:
        # Under the lock. A timeout <= 0 stores nothing (and drops the old value).
        data = self._data
        if deadline <= self._clock():
            data.pop(key, None)
            return
        data[key] = (deadline, value)
        data.move_to_end(key)
        while len(data) > self.max_entries:
            data.popitem(last=False)


#: LOCATION -> its store, as LocMemCache shares one dict per LOCATION
_by_location: dict[str, LocalStorage] = {}
_registry_lock = threading.Lock()


def for_location(location: str, max_entries: int, alias: str) -> LocalStorage:
    with _registry_lock:
        store = _by_location.get(location)
        if store is None:
            store = _by_location[location] = LocalStorage(location, max_entries, alias)
        else:  # the latest configuration of the LOCATION bounds it
            store.max_entries = max(1, int(max_entries))
        return store


def clear_all() -> None:
    """Empty every in-process store (what ``cache.clear()`` on each
    LocMemCache alias did when entries lived there; the test suite's reset)."""
    with _registry_lock:
        stores = list(_by_location.values())
    for store in stores:
        store.clear()


# -- entries ---------------------------------------------------------------------

_ROWS, _ROW, _PICKLED = 0, 1, 2


class Entry:
    """A cached read in the in-process store: the stamps it was computed
    under, and its result in a form no caller can change."""

    __slots__ = ("key", "stamps", "kind", "value")

    def __init__(self, key: str, stamps: list, kind: int, value):
        self.key = key
        self.stamps = stamps
        self.kind = kind
        self.value = value


def _frozen_row(row) -> bool:
    if type(row) is not tuple:
        return False
    immutable = _IMMUTABLE
    for value in row:
        if type(value) not in immutable:
            return False
    return True


def freeze(key: str, stamps: list, result) -> Entry:
    """The entry for ``result`` (what ``execute_sql`` returned, rows as a
    list, or one row or None). Rows of immutable values are kept as they
    are; anything else (a PostgreSQL array is a list) is pickled, and
    unpickled afresh on every hit. Raises what pickle raises for a value it
    refuses."""
    entry = shared(key, stamps, result)
    if entry is not None:
        return entry
    return Entry(key, list(stamps), _PICKLED,
                 pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


def shared(key: str, stamps: list, result) -> Entry | None:
    """The entry for ``result`` if it is made only of immutable values (so
    :func:`thaw` may hand out the same row objects to every caller), else None."""
    if type(result) is list:
        if all(_frozen_row(row) for row in result):
            return Entry(key, list(stamps), _ROWS, tuple(result))
    elif result is None or _frozen_row(result):
        return Entry(key, list(stamps), _ROW, result)
    return None


def thaw(key: str, entry) -> tuple[list, object] | None:
    """(stamps, result) of an entry filled under ``key``; None for anything else."""
    if type(entry) is not Entry or entry.key != key:
        return None
    kind = entry.kind
    if kind == _ROWS:
        return entry.stamps, list(entry.value)
    if kind == _ROW:
        return entry.stamps, entry.value
    return entry.stamps, pickle.loads(entry.value)
