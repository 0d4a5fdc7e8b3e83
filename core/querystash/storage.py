"""The storage contract every store plugin implements."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence


class StorageError(Exception):
    """Raised by a storage when the store cannot be reached or refuses."""


class Storage:
    """Where entries and stamps live. Values are opaque bytes.

    A storage turns store failures into :class:`StorageError` (or lets the
    client's exception through: the core catches every exception from a
    storage, counts it and goes to the database).
    """

    #: the name users give in ``QUERYSTASH["STORAGE"]``
    name: str = ""
    #: True when every process of the site shares this store. A process-local
    #: store gets a deployment warning outside DEBUG.
    shared: bool = True

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Return the values of ``keys`` in order, ``None`` where missing.

        One round trip: this is the whole hit path."""
        raise NotImplementedError

    def add_many(self, mapping: Mapping[str, bytes], timeout: int) -> set[str]:
        """Store each value only if its key is absent; return the keys that
        already existed (and were left alone)."""
        raise NotImplementedError

    def add_get_many(self, mapping: Mapping[str, bytes], keys: Sequence[str],
                     timeout: int) -> list[bytes | None]:
        """``add_many(mapping, timeout)``, then ``get_many(keys)``: the values
        read are those after the adds.

        The core calls it instead of ``get_many`` for a read whose stamps it
        has not seen in the store yet (a tag never used before, or one just
        invalidated), with a fresh value for each such stamp: the missing
        ones are created in the same round trip as the read, so the miss does
        not wait for an ``add_many`` before its query. Override it to send
        both in one round trip, in order (a pipeline on one connection); the
        adds need no acknowledgement of their own, since the read that follows
        them shows what the store holds. A storage may also skip the adds
        (and return what ``get_many`` would): a stamp read as missing is
        created by the core with ``add_many`` before the query, as always.
        This default makes two calls."""
        self.add_many(mapping, timeout)
        return self.get_many(keys)

    def set(self, key: str, value: bytes, timeout: int) -> None:
        """Store ``value`` under ``key`` for ``timeout`` seconds.

        The core calls it for entry fills only (stamps go through
        ``add_many``), so it may return before the store acknowledges: a
        lost entry is a later miss, never a stale read."""
        raise NotImplementedError

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete ``keys``; missing keys are not an error."""
        raise NotImplementedError

    def delete_get_many(self, delete: Sequence[str], keys: Sequence[str]) -> list[bytes | None]:
        """``delete_many(delete)``, then ``get_many(keys)``.

        For a writer that invalidates and must read keys the store holds
        after its COMMIT (querystash-fields reads a table's scheme slots):
        override it to send both in one round trip (a pipeline on one
        connection). The deletion is acknowledged, as ``delete_many``'s is.
        This default makes two calls."""
        self.delete_many(delete)
        return self.get_many(keys)

    def incr_many(self, mapping: Mapping[str, int]) -> None:
        """Optional: add each ``mapping`` value (a positive int) to the integer
        stored under its key, atomically in the store (``INCRBY``,
        memcached's ``incr``); a missing key counts as 0. Counters are made
        with no expiry (the store may still evict them) and read back with
        ``get_many``, as an int or its decimal bytes.

        Used off the request path only, by the background thread that adds
        this process's counters to the site-wide ones every few seconds
        (``STATS_FLUSH_SECONDS``): one round trip where the store allows.
        On failure raise: the whole batch is kept and sent again with the
        next one (a batch the store applied in part is then partly counted
        twice). Not implemented: the store keeps no site-wide figures."""
        raise NotImplementedError

    def stats(self) -> dict:
        """Store-side figures for ``manage.py querystash stats``."""
        return {}

    def identity(self) -> Hashable | None:
        """Where this storage keeps its keys: two storages with equal
        identities (the same servers, key prefix...) read and write the same
        keys. Hashable; ``None`` (the default): this object is a store of its own.

        A process keeps the stores it has used (``override_settings`` can
        switch them) and sends every invalidation to each. Telling the core
        that a new storage object is a store it already knows saves the
        invalidation of everything in it before its first read."""
        return None

    def close(self) -> None:
        """Release connections (called when the core forgets this storage:
        another object of the same identity replaces it, too many stores were
        used, or ``uninstall()``). It may be used again afterwards."""


def counts_site_wide(storage: Storage) -> bool:
    """Does ``storage`` implement :meth:`Storage.incr_many`?"""
    return getattr(type(storage), "incr_many", Storage.incr_many) is not Storage.incr_many
