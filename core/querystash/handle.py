"""The runtime as plugins see it: :class:`RuntimeHandle`, passed to the
``querystash_ready(runtime)`` hook after every (re)build of the runtime.

A thin facade over the core's internal runtime: what a plugin needs to read
the configuration, talk to the store the core uses, invalidate tags under the
same transaction rules as the core's own writes, and patch Django reversibly.
Nothing here is called per query by the core; the methods a plugin calls on
its own hot path (``live``, ``written_tags``) are an attribute read or two.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Set
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import _stamps, _transactions
from ._tags import GLOBAL_TAG
from .patching import Patches

if TYPE_CHECKING:
    from ._runtime import Runtime
    from .conf import ModelRule
    from .storage import Storage
    from .strategy import InvalidationStrategy

logger = logging.getLogger("querystash")

_connections: Any = None


def _connection(alias: str):
    # Imported on first use: this module is imported with the package,
    # before Django is set up.
    global _connections
    if _connections is None:
        from django.db import connections

        _connections = connections
    return _connections[alias]


#: name -> the registry of patches a plugin made through ``RuntimeHandle.patches``;
#: undone (and emptied) by ``querystash``'s ``uninstall()``
_plugin_patches: dict[str, Patches] = {}


def undo_plugin_patches() -> None:
    """Undo every plugin's patches, last registered first."""
    for name in reversed(list(_plugin_patches)):
        _plugin_patches.pop(name).undo()


class RuntimeHandle:
    """The live querystash runtime, for plugins (see ``docs/hooks.md``).

    One per build: a plugin that keeps it should test :attr:`live` before
    acting on it, since a configuration change builds another (and calls
    ``querystash_ready`` again with the new one).
    """

    __slots__ = ("_rt",)

    GLOBAL_TAG = GLOBAL_TAG

    def __init__(self, rt: Runtime):
        self._rt = rt

    def __repr__(self) -> str:
        return f"<RuntimeHandle enabled={self.enabled} live={self.live}>"

    # -- state ------------------------------------------------------------------

    @property
    def live(self) -> bool:
        """Is this the runtime in use (not replaced by a rebuild, nor uninstalled)?"""
        return self._rt.live

    @property
    def enabled(self) -> bool:
        """Is caching on (``ENABLED``, a store, no start-up problem)?"""
        return self._rt.enabled

    @property
    def config(self) -> dict[str, Any]:
        """The whole ``QUERYSTASH`` setting, defaults filled in (don't modify)."""
        return self._rt.config

    @property
    def storage(self) -> Storage | None:
        """The store entries and stamps are kept in, or None (caching off)."""
        return self._rt.storage

    @property
    def strategies(self) -> tuple[InvalidationStrategy, ...]:
        """Every invalidation strategy of this build, from every plugin."""
        return tuple(self._rt.strategies)

    def rule(self, model: type) -> ModelRule | None:
        """What ``MODELS`` says about ``model``: ``.ops`` (a frozenset of
        operations cached) and ``.timeout``; None if it is not cached."""
        return self._rt.rule(model)

    # -- stamps -----------------------------------------------------------------

    def stamp_key(self, tag: str) -> str:
        """The store key of ``tag``'s stamp (``storage.get_many([...])``)."""
        return self._rt.stamp_prefix + tag

    def invalidate(self, alias: str, tags: Iterable[str], *, committed: bool = False) -> None:
        """Invalidate ``tags`` because of a write on database ``alias``, as
        the core does for its own writes: now, and, inside a transaction,
        again just before and just after its COMMIT (a read in between may
        have filled from the snapshot before the write). Every store this
        process used is told; a store that fails owes its global stamp.

        :param committed: the write's transaction has already committed
            (an ``on_commit`` callback): invalidate now only.
        """
        tags = set(tags)
        if not tags:
            return
        if not committed:
            connection = _connection(alias)
            if _transactions.in_transaction(connection):
                _transactions.record(connection, tags)
        _stamps.invalidate(self._rt, tags)

    def invalidate_reading(self, alias: str, tags: Iterable[str], keys: list[str], *,
                           committed: bool = False) -> list[bytes | None] | None:
        """:meth:`invalidate`, and read ``keys`` (store keys, e.g. from
        :meth:`stamp_key`) from the store in the same round trip, after the
        deletion (``Storage.delete_get_many``). Returns their values, or None
        when the store was not read (out, owing its debt, or failing: the
        invalidation is then the core's debt, as with :meth:`invalidate`)."""
        tags = set(tags)
        if not committed:
            connection = _connection(alias)
            if tags and _transactions.in_transaction(connection):
                _transactions.record(connection, tags)
        return _stamps.invalidate_reading(self._rt, tags, keys)

    @contextmanager
    def deferred(self, alias: str, *,
                 in_open_transaction: bool = False) -> Iterator[set[str] | None]:
        """A block whose writes on database ``alias`` are invalidated once,
        when it exits, together with the tags the plugin adds to the set it
        yields: a write and the plugin's own tags for it in one store call.

        For a block that starts outside any transaction and runs a write in
        autocommit or in a transaction of its own that it commits (or rolls
        back) before exiting — as querystash-fields' ``save()`` does to read
        a row's old values under lock. The tags are invalidated after that
        COMMIT, which is what an autocommit write gets; the invalidations at
        the statement and before COMMIT, which only shorten the window of a
        transaction that runs long, are left out. Inside a transaction
        already open (or a ``deferred`` block) it yields None and changes
        nothing: invalidate with :meth:`invalidate` then. Store errors are
        the core's (a lost invalidation is a debt); none reaches the write.

        :param in_open_transaction: inside a transaction already open, hold
            back too: the block's statements are invalidated when it exits,
            with the plugin's tags, instead of each at once — still before
            the COMMIT, by the same thread, so no other connection can have
            seen the write meanwhile. The transaction's rules are otherwise
            unchanged: each write is recorded as the transaction's at its
            statement (read-your-writes), and invalidated again before and
            after the COMMIT. The block must not end the transaction.
            querystash-fields' ``save()`` inside ``atomic()`` uses it."""
        connection = _connection(alias)
        if _transactions.deferred(connection) is not None or (
                _transactions.in_transaction(connection) and not in_open_transaction):
            yield None
            return
        pending = _transactions.defer(connection)
        try:
            yield pending
        finally:
            _transactions.stop_deferring(connection)
            if pending:
                try:
                    if _transactions.in_transaction(connection):
                        # Inside a transaction (open before the block, or
                        # left open by it): its rules, from here on.
                        _transactions.record(connection, pending)
                    _stamps.invalidate(self._rt, pending)
                except Exception:  # never let cache bookkeeping break a write
                    logger.exception("querystash: invalidation after a write failed")

    def after_commit(self, alias: str,
                     send: Callable[[set[str], bool], None]) -> bool:
        """Inside a transaction on ``alias``: when it ends, call ``send(tags,
        committed)`` once. After its COMMIT (``committed`` true; even a COMMIT
        that raised, as the server may have committed), ``tags`` is the set
        the core is about to invalidate, the transaction's writes: the plugin
        may send them with its own in one store call (e.g. with
        :meth:`invalidate_reading`, ``committed=True``) and remove what it
        sent from the set; the core invalidates what remains. After a
        rollback ``committed`` is false and the set empty: nothing to do but
        forget. Called before ``on_commit`` callbacks, in the order first
        registered; registering the same callable again does nothing. If it
        raises, the core invalidates what is left in the set. Outside a
        transaction it does nothing and returns False.
        querystash-fields settles the rows written inside ``atomic()`` so."""
        connection = _connection(alias)
        if not _transactions.in_transaction(connection):
            return False
        _transactions.add_sender(connection, send)
        return True

    # -- transactions -----------------------------------------------------------

    def in_transaction(self, alias: str) -> bool:
        """Is database ``alias`` inside a transaction (``atomic()`` or
        autocommit off)? Never connects just to ask."""
        return _transactions.in_transaction(_connection(alias))

    def written_tags(self, alias: str) -> Set[str] | None:
        """The tags the open transaction on ``alias`` has written (read-only;
        None outside a transaction or before its first write): a read of them
        must not be served from, nor filled into, the store before COMMIT."""
        return _transactions.written_tags(_connection(alias))

    # -- the store's health -----------------------------------------------------

    def store_usable(self) -> bool:
        """False during a store outage (or while its debt is unpaid): the
        core makes no store call from a request meanwhile, and neither should
        a plugin (a background thread pays the debt and reopens the store)."""
        return self._rt.breaker.usable

    def store_failed(self, error: BaseException) -> None:
        """Report a store call of the plugin's that raised ``error``: it is
        counted and logged as the core's own failures are, and the store is
        bypassed until a background thread has deleted its global stamp
        (:meth:`store_usable` is False meanwhile). Invalidations go through
        :meth:`invalidate`, which keeps the debt of one that fails."""
        self._rt.breaker.trip(self._rt, error)

    # -- patches ----------------------------------------------------------------

    def patches(self, name: str) -> Patches:
        """The registry of ``name``'s (a plugin's) patches to Django: what is
        patched through it is undone by querystash's ``uninstall()``, which
        empties it. The same registry for every build until then, so a
        plugin patches once: ``if not patches: patches.patch(...)``."""
        registry = _plugin_patches.get(name)
        if registry is None:
            registry = _plugin_patches[name] = Patches()
        return registry
