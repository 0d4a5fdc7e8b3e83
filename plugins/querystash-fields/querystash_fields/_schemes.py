"""The shared registry of schemes (column combinations) in use per table.

Each table has ``slots`` fixed keys in the store, ``<stamp prefix><table>!s<i>``,
named like stamps. A slot holds a *registration*: ``MAGIC``, a random nonce and
the scheme's columns. A read of a scheme depends on the slot registering it as
on a stamp whose value is pinned (``InvalidationStrategy.stamp_value``): the
core creates a missing slot with a fresh registration (add = SET NX) before the
query runs, fills only if the slot holds a registration of the read's scheme,
and serves the entry only while the slot holds that very registration. Writers
read every slot of a table in one ``get_many``.

See the README ("Correctness") for why no scheme can be missed.
"""

from __future__ import annotations

import logging
import os
import threading
import time

logger = logging.getLogger("querystash")

MAGIC = b"qsf1"
_NONCE = 8
#: how long a table whose slots are all taken is left at table level
FULL_RETRY = 10.0


class SlotTag(str):
    """A slot's tag, carrying the scheme the read that uses it registers.

    The core hands a read's own tag objects to ``stamp_value``, so the value
    pinned for a slot always registers the scheme of *that* read, whatever
    this process has since decided about the slot.
    """

    table: str
    scheme: tuple[str, ...]


def slot_tag(table: str, i: int, scheme: tuple[str, ...] = ()) -> SlotTag:
    tag = SlotTag(f"{table}!s{i}")
    tag.table, tag.scheme = table, scheme
    return tag


def encode(scheme: tuple[str, ...]) -> bytes:
    """A new registration of ``scheme``: never seen in any store before."""
    return MAGIC + os.urandom(_NONCE) + ",".join(scheme).encode()


def decode(value) -> tuple[str, ...] | None:
    """The scheme a slot value registers; None for a missing value or
    anything else (a value this plugin did not write)."""
    if not isinstance(value, bytes) or len(value) <= len(MAGIC) + _NONCE:
        return None
    if not value.startswith(MAGIC):
        return None
    try:
        return tuple(value[len(MAGIC) + _NONCE:].decode().split(","))
    except UnicodeDecodeError:
        return None


class Registry:
    """Which slot this process reads each (table, scheme) with."""

    def __init__(self, slots: int):
        self.slots = slots
        self.lock = threading.Lock()
        #: (table, scheme) -> its slot tag
        self.mine: dict[tuple[str, tuple[str, ...]], SlotTag] = {}
        self.full_until: dict[str, float] = {}
        #: bumped whenever a slot is dropped: memoized tag lists are recomputed
        self.generation = 0
        #: table -> its slots as a writer last read them (``last``)
        self.found: dict[str, list] = {}

    # -- readers: choosing a slot (query_tags) ------------------------------------

    def slot_for(self, rt, table: str, scheme: tuple[str, ...]) -> SlotTag | None:
        """The slot tag for ``scheme`` on ``table``: one holding a registration
        of it, else the first free one (the core registers the scheme there
        when the read misses). None when every slot is taken or the store fails."""
        found = self.mine.get((table, scheme))
        if found is not None:
            return found
        if self.full_until.get(table, 0.0) > time.monotonic():
            return None
        if not rt.store_usable():
            return None  # the core bypasses the store meanwhile
        try:
            values = rt.storage.get_many(
                [rt.stamp_key(slot_tag(table, i)) for i in range(self.slots)]
            )
        except Exception as exc:
            rt.store_failed(exc)
            return None
        free = [i for i, value in enumerate(values) if value is None]
        held = [i for i, value in enumerate(values) if decode(value) == scheme]
        if not held and not free:
            self.full_until[table] = time.monotonic() + FULL_RETRY
            logger.warning("querystash-fields: all %d scheme slots of %s are taken; its "
                           "queries with new column combinations use table-level "
                           "invalidation", self.slots, table)
            return None
        tag = slot_tag(table, (held or free)[0], scheme)
        with self.lock:
            self.mine[(table, scheme)] = tag
        return tag

    # -- readers: on a miss, through the core (stamp_value / stamp_conflict) -------

    def stamp_value(self, tag: SlotTag, held: bytes | None) -> bytes:
        """The registration the read's fill must be made under, given what
        the read's own stamp read found in the slot (``held``): that one if
        it registers the read's scheme, else a new one (which the core adds
        if the slot is missing, and which conflicts otherwise)."""
        if held is not None:
            if decode(held) == tag.scheme:
                return held
            self.conflict(tag, held)  # taken: the read will not fill; move on
        # Missing (never registered, evicted, expired) or another scheme's:
        # a value that was never in the store, so an entry filled under an
        # earlier registration can never match again.
        return encode(tag.scheme)

    def conflict(self, tag: SlotTag, found) -> None:
        """The slot held ``found`` instead: if that is another scheme's
        registration, stop using this slot for the read's scheme."""
        if decode(found) == tag.scheme:
            return  # our scheme, registered by someone else: the next read adopts it
        with self.lock:
            key = (tag.table, tag.scheme)
            if self.mine.get(key) == tag:
                del self.mine[key]
                self.generation += 1

    # -- writers ------------------------------------------------------------------

    def read(self, rt, tables) -> dict[str, list[tuple[str, tuple[str, ...] | None]]]:
        """Every slot of ``tables`` in one round trip:
        ``{table: [(slot tag, scheme or None for garbage)]}`` (empty slots left out)."""
        tables = list(tables)
        return self.parse(tables, rt.storage.get_many(self.keys(rt, tables)))

    def keys(self, rt, tables: list[str]) -> list[str]:
        """The store keys of every slot of ``tables``, in ``parse``'s order."""
        return [rt.stamp_key(f"{t}!s{i}") for t in tables for i in range(self.slots)]

    def parse(self, tables: list[str], values) -> dict[str, list]:
        """``read``'s answer from the values of ``keys(rt, tables)``; remembered
        as what this process last found (``last``)."""
        out: dict[str, list] = {t: [] for t in tables}
        for n, value in enumerate(values):
            if value is None:
                continue
            table = tables[n // self.slots]
            out[table].append((f"{table}!s{n % self.slots}", decode(value)))
        self.found.update(out)
        return out

    def last(self, tables) -> dict[str, list]:
        """What the last ``read``/``parse`` found in the slots of ``tables``
        (empty for a table never read): a guess, to send the field tags of
        those schemes with the deletion that reads the slots again."""
        return {t: self.found.get(t, []) for t in tables}
