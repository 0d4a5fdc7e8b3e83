"""Entries already decoded, kept in the process: a repeated hit on a shared
store (redis, memcached) skips the MAC check and the unpickling.

Why it is exact: ``_codec.decode(secret, key, blob)`` is a pure function of
its three arguments. A memo belongs to one runtime (one secret), holds per
key the exact bytes it decoded, and answers only when the store returns the
same bytes again, compared in full: what it returns is what decoding them
again would return. Anything else (other bytes, a corrupt or foreign value,
another key) is decoded as before. The store is still read on every hit, and
the stamps are still checked against the entry's by the caller: the memo only
replaces the decoding of bytes, never the reading of them.

Only results made of immutable values are kept (``_localstore.shared``), and
handed out as the in-process store hands out its own (a fresh list of the
same row tuples), so no caller can change what another one gets.
"""

from __future__ import annotations

import threading
from typing import Any

from . import _codec
from ._localstore import shared, thaw

#: bytes of entries held per runtime (their decoded rows take a few times more)
BUDGET = 4 * 1024 * 1024
#: larger entries are decoded on every hit rather than held
MAX_ENTRY = 256 * 1024


class DecodedMemo:
    def __init__(self, secret: bytes, budget: int = BUDGET, max_entry: int = MAX_ENTRY):
        self.secret = secret
        self.budget = budget
        self.max_entry = min(max_entry, budget)
        #: key -> (the blob decoded, its entry); oldest first
        self._held: dict[str, tuple[bytes, Any]] = {}
        self._size = 0
        self._lock = threading.Lock()

    def decode(self, key: str, blob: Any) -> Any:
        """``_codec.decode(secret, key, blob)``: the (stamps, result) signed
        under ``key``, or None for anything corrupt, truncated or foreign."""
        if type(blob) is bytes:  # exact bytes: a subclass could redefine ==
            held = self._held.get(key)
            if held is not None and held[0] == blob:
                return thaw(key, held[1])
        payload = _codec.decode(self.secret, key, blob)
        if payload is not None and type(blob) is bytes and len(blob) <= self.max_entry:
            self._keep(key, blob, payload)
        return payload

    def _keep(self, key: str, blob: bytes, payload) -> None:
        try:
            stamps, result = payload
            entry = shared(key, stamps, result)
        except Exception:  # not the (stamps, result) of a read: never held
            return
        if entry is None:
            return
        with self._lock:
            old = self._held.pop(key, None)
            if old is not None:
                self._size -= len(old[0])
            held = self._held
            while held and self._size + len(blob) > self.budget:
                oldest = next(iter(held))
                self._size -= len(held.pop(oldest)[0])
            held[key] = (blob, entry)
            self._size += len(blob)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._size = 0
