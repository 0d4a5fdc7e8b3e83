"""A memoized entry as stored: (tags, stamps, result).

In a shared store it is bytes, signed so that a planted value is never
unpickled: ``MAGIC`` + 16-byte keyed BLAKE2b over (key, the rest) + the
header's length (4 bytes) + the pickled (tags, stamps) + the pickled result.
The result is pickled once, on its own (``_memoize`` pickles it under the
capture, so a lazy value's queries are captured), and a hit unpickles the
small header, compares the stamps, then unpickles the result from a view of
the blob: no second copy, no nested pickle. Keyed BLAKE2b costs about half of
HMAC-SHA256 on a few kilobytes, and the hit verifies every byte it unpickles.

In the in-process store (``_localstore``) nobody outside the process can
plant a value, so it is a :class:`Frozen` object: a result made only of
immutable values is kept as it is and handed out as it is; anything else is
kept pickled and unpickled afresh on every hit, so no caller can change what
the next one is served.
"""

from __future__ import annotations

import datetime
import decimal
import pickle
import uuid
from hashlib import blake2b
from hmac import compare_digest
from typing import Any

from django.utils.safestring import SafeString

MAGIC = b"qm1"
_MAC = 16
_LEN = len(MAGIC) + _MAC
_HEAD = _LEN + 4


def derive_key(secret: bytes) -> bytes:
    """The MAC key of memoized entries, apart from query entries' (``_codec``)."""
    return blake2b(secret, digest_size=32, person=b"querystash.memo").digest()


def _mac(mac_key: bytes, key: str, rest) -> bytes:
    mac = blake2b(key.encode(), key=mac_key, digest_size=_MAC)
    mac.update(rest)
    return mac.digest()


def pack(mac_key: bytes, key: str, tags: list, stamps: list, body: bytes) -> bytes:
    """The signed bytes of an entry; ``body`` is the pickled result."""
    head = pickle.dumps((tags, stamps), protocol=pickle.HIGHEST_PROTOCOL)
    rest = len(head).to_bytes(4, "big") + head + body
    return MAGIC + _mac(mac_key, key, rest) + rest


def unpack(mac_key: bytes, key: str, blob: Any) -> tuple[list, list, memoryview] | None:
    """(tags, stamps, the pickled result) of an entry signed for ``key``;
    None for anything corrupt, truncated or foreign."""
    if not isinstance(blob, bytes) or len(blob) < _HEAD or not blob.startswith(MAGIC):
        return None
    view = memoryview(blob)
    if not compare_digest(_mac(mac_key, key, view[_LEN:]), view[len(MAGIC):_LEN]):
        return None
    end = _HEAD + int.from_bytes(view[_LEN:_HEAD], "big")
    try:
        tags, stamps = pickle.loads(view[_HEAD:end])
    except Exception:  # signed by us yet unreadable: a miss
        return None
    return tags, stamps, view[end:]


# -- the in-process store ----------------------------------------------------------------

#: value types with no mutable state, exact types only (a subclass may add some)
_IMMUTABLE = frozenset({
    type(None), bool, int, float, complex, str, bytes, decimal.Decimal,
    datetime.datetime, datetime.date, datetime.time, datetime.timedelta, uuid.UUID,
    SafeString,  # a rendered fragment: a str with no attributes (__slots__ = ())
})
_DEPTH = 16


def immutable(value: Any, depth: int = 0) -> bool:
    """Is ``value`` made only of immutable values (tuples and frozensets of them)?"""
    t = type(value)
    if t in _IMMUTABLE:
        return True
    if (t is tuple or t is frozenset) and depth < _DEPTH:
        return all(immutable(item, depth + 1) for item in value)
    return False


class Frozen:
    """A memoized entry in the in-process store. ``value`` is the result
    itself when ``pickled`` is false (it is immutable), else its pickle."""

    __slots__ = ("key", "tags", "stamps", "value", "pickled")

    def __init__(self, key: str, tags: list, stamps: list, value: Any, pickled: bool):
        self.key = key
        self.tags = tags
        self.stamps = stamps
        self.value = value
        self.pickled = pickled


def freeze(key: str, tags: list, stamps: list, value: Any, body: bytes | None) -> Frozen:
    """The entry for ``value``; ``body``: its pickle (None if it is immutable)."""
    if body is None:
        return Frozen(key, tags, stamps, value, False)
    return Frozen(key, tags, stamps, body, True)


def thaw(key: str, entry: Any) -> Frozen | None:
    """The entry filled under ``key``, or None for anything else."""
    if type(entry) is not Frozen or entry.key != key:
        return None
    return entry
