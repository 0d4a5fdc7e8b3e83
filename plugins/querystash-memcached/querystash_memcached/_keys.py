"""Keys memcached accepts, and which server holds each one.

memcached refuses keys over 250 bytes, with spaces or control characters
(and pymemcache refuses non-ASCII ones). Keys that are already safe are kept
as they are, so the store stays readable; any other key is replaced by a
digest, marked with a ``#`` that a kept key never starts with.
"""

from __future__ import annotations

import re
from bisect import bisect
from hashlib import blake2b

MAX_KEY = 250
_SAFE = re.compile(r"[\x21-\x22\x24-\x7e][\x21-\x7e]*")  # printable, no leading "#"


class KeyMaker:
    """``key -> name`` with the configured prefix, always a valid memcached key."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self.room = MAX_KEY - len(prefix)

    def __call__(self, key: str) -> str:
        if len(key) <= self.room and _SAFE.fullmatch(key):
            return self.prefix + key
        digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()
        return f"{self.prefix}#{digest}"


class Ring:
    """Consistent hashing of key names onto servers (ketama-style points).

    The ring never changes while the storage lives: a dead server keeps its
    share of the keys, so they are never rehashed onto the survivors (see the
    README, "Dead servers").
    """

    POINTS = 160  # per server: shares within a few percent of even

    def __init__(self, labels: list[str]):
        points = sorted(
            (_hash(f"{label}-{i}"), index)
            for index, label in enumerate(labels)
            for i in range(self.POINTS)
        )
        self._hashes = [h for h, _ in points]
        self._owners = [index for _, index in points]

    def index(self, name: str) -> int:
        """Which server (index into the labels) holds ``name``."""
        i = bisect(self._hashes, _hash(name))
        return self._owners[i if i < len(self._owners) else 0]


def _hash(text: str) -> int:
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big")
