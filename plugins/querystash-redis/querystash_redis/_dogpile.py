"""Optional dog-pile protection: one reader recomputes a missing entry.

Off unless ``QUERYSTASH["redis"]["dogpile"]`` is set. A lease key sits in the
entry's own Cluster slot (``{<entry>}:lease``) and is read in the same MGET as
the entry and its stamps, so a hit still costs one round trip. On a sure miss
(entry or a stamp missing) a reader takes the lease with ``SET NX PX``; the
winner goes to the database and its fill deletes the lease; the others poll
for up to ``wait_ms`` and then read the fresh entry, or go to the database.
An entry that exists but was computed under older stamps looks like a hit
here (only the core can compare stamps): it is no dog-pile, because the stamp
it misses on was recreated by a reader that holds the lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ._config import Dogpile

POLL_SECONDS = 0.005


def lease_name(entry_name: str) -> str:
    """The lease of an entry, hash-tagged into the entry's Cluster slot."""
    return "{" + entry_name + "}:lease"


class Leases:
    def __init__(self, config: Dogpile):
        self.lease_ms = config.lease_ms
        self.wait_ms = config.wait_ms
        # Process-local counters for ``manage.py querystash stats``.
        self.taken = 0
        self.waited = 0
        self.timed_out = 0

    def get(self, mget: Callable[[list[str]], list], take: Callable[[str, int], bool],
            names: list[str]) -> list:
        """``names`` = entry + stamps; returns their values, after waiting for
        another reader's fill when that reader holds the entry's lease."""
        lease = lease_name(names[0])
        values = mget([*names, lease])
        if values.pop() is None:
            if values[0] is not None and None not in values:
                return values  # looks like a hit; the core checks the stamps
            if take(lease, self.lease_ms):
                self.taken += 1
                return values  # ours: the caller recomputes and fills
        return self._wait(mget, names, lease, values)

    def _wait(self, mget, names: list[str], lease: str, values: list) -> list:
        self.waited += 1
        deadline = time.monotonic() + self.wait_ms / 1000
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(POLL_SECONDS, remaining))
            values = mget([*names, lease])
            if values.pop() is None:
                return values  # filled (or given up): read what is there now
        self.timed_out += 1
        return values  # still leased: go to the database

    def stats(self) -> str:
        return (f"lease {self.lease_ms} ms, wait {self.wait_ms} ms; this process: "
                f"{self.taken} leases taken, {self.waited} waits, {self.timed_out} timed out")
