"""Entries and stamps in memcached, through pymemcache.

Every server has its own pool of plain ``pymemcache.Client`` connections; the
servers are placed on a fixed consistent-hash ring. There is deliberately no
``HashClient``: after an error it answers with defaults for a while instead of
raising (a dropped stamp deletion is a stale read later) and moves a failing
server's keys onto the survivors. Here a call that touches a server that
fails raises, and the core's circuit breaker sends reads to the database and
keeps the debt of any invalidation that was lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError
from pymemcache.pool import ObjectPool

from querystash import QUIET_LIMIT, Storage, StorageError

from . import _config
from ._keys import KeyMaker, Ring

logger = logging.getLogger("querystash.memcached")

#: bytes memcached adds to an item beyond key and value (header, flags, CAS,
#: suffix); measured at ~56 on memcached 1.6, with a margin
ITEM_OVERHEAD = 100
#: memcached reads an expiry above 30 days as a unix time
_RELATIVE_LIMIT = 30 * 24 * 3600
#: server-side figures shown by ``manage.py querystash stats``
SERVER_FIGURES = ("curr_items", "evictions", "bytes", "limit_maxbytes", "get_hits", "get_misses")


class _Server:
    """One memcached server: its label and a pool of connections to it."""

    def __init__(self, label: str, address: _config.Address, options: dict[str, Any]):
        self.label = label
        self.pool = ObjectPool(
            lambda: Client(
                address,
                connect_timeout=options["connect_timeout"],
                timeout=options["timeout"],
                no_delay=True,  # small requests: don't wait for Nagle
                default_noreply=False,  # acknowledged or raises (small entry fills: noreply)
            ),
            after_remove=Client.close,
            max_size=options["pool_size"],
            idle_timeout=options["pool_idle_timeout"],
        )

    def run(self, call: Callable[..., Any], *args: Any) -> Any:
        pool = self.pool
        client = pool.get()
        try:
            result = call(client, *args)
        except MemcacheServerError:
            pool.destroy(client)  # the server's answer (value too large...): read by the caller
            raise
        except Exception as exc:
            # The connection may be mid-reply: never hand it out again. The
            # error names the server: the log must say which one failed.
            pool.destroy(client)
            raise StorageError(f"memcached server {self.label}: {exc!r}") from exc
        except BaseException:
            pool.destroy(client)
            raise
        pool.release(client)
        return result


class MemcachedStorage(Storage):
    """Storage on one memcached server or a pool of them.

    Takes the keys of ``QUERYSTASH["memcached"]`` as keyword arguments, so a
    benchmark or a script can build one directly::

        MemcachedStorage(servers=["127.0.0.1:11211"], key_prefix="bench:")
    """

    name = "memcached"
    shared = True

    def __init__(self, **options: Any):
        options = _config.section(options)
        addresses = _config.servers(options["servers"])
        self.options = options
        self.max_item_size: int = options["max_item_size"]
        self.key = KeyMaker(options["key_prefix"])
        self.servers = [_Server(label, address, options)
                        for label, address in zip(options["servers"], addresses, strict=True)]
        self._ring = Ring(options["servers"]) if len(self.servers) > 1 else None
        #: this process's own figures (approximate under threads: plain ints)
        self.counters = {"round trips": 0, "oversized values skipped": 0,
                         "values refused by the server": 0}
        self._warned: set[str] = set()
        self._warn_lock = threading.Lock()

    # -- placement ----------------------------------------------------------------

    def server_for(self, key: str) -> _Server:
        """The server that holds ``key`` (a querystash key, before hashing)."""
        return self._server(self.key(key))

    def _server(self, name: str) -> _Server:
        if self._ring is None:
            return self.servers[0]
        return self.servers[self._ring.index(name)]

    def _grouped(self, names: Sequence[str]) -> dict[_Server, list[str]]:
        if self._ring is None:
            return {self.servers[0]: list(names)}
        groups: dict[_Server, list[str]] = {}
        for name in names:
            groups.setdefault(self._server(name), []).append(name)
        return groups

    # -- the Storage contract -----------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        names = [self.key(k) for k in keys]
        found: dict[str, bytes] = {}
        # One "get" of all the keys per server; a failing server raises, it
        # never reads as "missing" (a missing stamp is safe, a skipped one not).
        for server, group in self._grouped(names).items():
            self.counters["round trips"] += 1
            found.update(server.run(Client.get_many, group))
        return [found.get(name) for name in names]

    def add_many(self, mapping: Mapping[str, bytes], timeout: int) -> set[str]:
        expire = _expire(timeout)
        keys = {self.key(k): k for k in mapping}
        unknown: set[str] = set()
        for server, group in self._grouped(list(keys)).items():
            values = {}
            for name in group:
                if self._fits(name, mapping[keys[name]]):
                    values[name] = mapping[keys[name]]
                else:
                    unknown.add(keys[name])
            if not values:
                continue
            self.counters["round trips"] += 1
            try:
                stored = server.run(_add_many, values, expire)
            except MemcacheServerError as exc:
                if not self._refused(exc, group[0], sum(map(len, values.values()))):
                    raise
                unknown.update(keys[name] for name in values)
                continue
            unknown.update(keys[name] for name, ok in stored.items() if not ok)
        # Keys not added are reported as existing: the core then reads them
        # back, and a stamp it finds missing stops the fill (never a guess).
        return unknown

    def add_get_many(self, mapping: Mapping[str, bytes], keys: Sequence[str],
                     timeout: int) -> list[bytes | None]:
        expire = _expire(timeout)
        names = [self.key(k) for k in keys]
        adds = {self.key(k): v for k, v in mapping.items()}
        found: dict[str, bytes] = {}
        # Per server, on one connection: the adds sent without waiting for
        # their replies ("noreply"), then the "get", which the server answers
        # after it has run them (in order): one round trip. An add the server
        # refused (a value too large...) shows as a missing stamp, which the
        # core then creates with an acknowledged add_many.
        for server, group in self._grouped(names).items():
            values = {n: adds[n] for n in group if n in adds and self._fits(n, adds[n])}
            self.counters["round trips"] += 1
            found.update(server.run(_add_get_many, values, expire, group))
        return [found.get(name) for name in names]

    def delete_get_many(self, delete: Sequence[str], keys: Sequence[str]) -> list[bytes | None]:
        names = [self.key(k) for k in keys]
        reads = self._grouped(names) if names else {}
        deletes = self._grouped([self.key(k) for k in delete]) if delete else {}
        found: dict[str, bytes] = {}
        error: BaseException | None = None
        # Per server, on one connection: the deletes sent with "noreply", then
        # the "get". The server runs a connection's commands in order, so its
        # answer to the get says the deletes before it were run: acknowledged,
        # as delete_many's are, in one round trip. A server with deletes and
        # nothing to read gets delete_many's acknowledged deletes. As there,
        # every reachable server gets its deletions even if another fails.
        for server in {**deletes, **reads}:
            self.counters["round trips"] += 1
            try:
                if server in reads:
                    found.update(server.run(_delete_get_many, deletes.get(server, []),
                                            reads[server]))
                else:
                    server.run(Client.delete_many, deletes[server], False)
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error
        return [found.get(name) for name in names]

    def set(self, key: str, value: bytes, timeout: int) -> None:
        name = self.key(key)
        if not self._fits(name, value):
            return
        # An entry fill: a small one is sent with noreply (see querystash.QUIET_LIMIT),
        # saving a round trip on every miss; a lost fill is a later miss. A
        # larger one waits for the answer, so a server refusing it is seen.
        quiet = len(value) <= QUIET_LIMIT
        if not quiet:
            self.counters["round trips"] += 1
        try:
            self._server(name).run(Client.set, name, value, _expire(timeout), quiet)
        except MemcacheServerError as exc:
            if not self._refused(exc, key, len(value)):
                raise

    def delete_many(self, keys: Sequence[str]) -> None:
        error: BaseException | None = None
        # Every reachable server gets its deletions even if another fails:
        # the core settles the failed part (the whole store) afterwards.
        for server, group in self._grouped([self.key(k) for k in keys]).items():
            self.counters["round trips"] += 1
            try:
                server.run(Client.delete_many, group, False)
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error

    def incr_many(self, mapping: Mapping[str, int]) -> None:
        # The site-wide counters, from a background thread. memcached's incr
        # does not create a key: add it (no expiry), and if another process
        # added it meanwhile, incr after all. A round trip per key: a few
        # dozen keys every few seconds.
        for key, delta in mapping.items():
            name = self.key(key)
            server = self._server(name)
            self.counters["round trips"] += 1
            if server.run(Client.incr, name, delta, False) is not None:
                continue
            self.counters["round trips"] += 1
            if server.run(Client.add, name, str(delta).encode(), 0, False):
                continue
            self.counters["round trips"] += 1
            server.run(Client.incr, name, delta, False)

    def stats(self) -> dict[str, Any]:
        totals = dict.fromkeys(SERVER_FIGURES, 0)
        lines: dict[str, str] = {}
        down = 0
        for server in self.servers:
            try:
                raw = server.run(Client.stats)
            except Exception as exc:
                down += 1
                lines[f"server {server.label}"] = f"unreachable ({exc!r})"
                continue
            figures = {f: int(raw.get(f.encode(), 0)) for f in SERVER_FIGURES}
            for f, n in figures.items():
                totals[f] += n
            lines[f"server {server.label}"] = " ".join(f"{f}={n}" for f, n in figures.items())
        return {"servers": len(self.servers), "servers unreachable": down,
                **totals, **self.counters, **lines}

    def identity(self):
        # The whole section (servers, key prefix, options): the same settings
        # are the same store.
        return tuple(sorted((key, tuple(value) if isinstance(value, list) else value)
                            for key, value in self.options.items()))

    def close(self) -> None:
        for server in self.servers:
            server.pool.clear()

    # -- values memcached would refuse ----------------------------------------------

    def _fits(self, name: str, value: bytes) -> bool:
        if len(value) + len(name) + ITEM_OVERHEAD <= self.max_item_size:
            return True
        self.counters["oversized values skipped"] += 1
        self._warn_once("oversized", "querystash: a value of %d bytes is over "
                        'QUERYSTASH["memcached"]["max_item_size"] (%d): not cached '
                        "(counted in stats, logged once)", len(value), self.max_item_size)
        return False

    def _refused(self, exc: MemcacheServerError, key: str, size: int) -> bool:
        """True for a store the server refused (item too large, no memory):
        not cached, not a store failure."""
        message = str(exc).lower()
        if "too large" not in message and "out of memory" not in message:
            return False
        self.counters["values refused by the server"] += 1
        self._warn_once(message, "querystash: memcached refused a value of %d bytes (%s): not "
                        "cached (counted in stats, logged once)", size, exc)
        return True

    def _warn_once(self, what: str, message: str, *args: Any) -> None:
        with self._warn_lock:
            if what in self._warned:
                return
            self._warned.add(what)
        logger.warning(message, *args)


def _add_many(client: Client, values: dict[str, bytes], expire: int) -> dict[str, bool]:
    # pymemcache has no public multi-add; its store command pipelines one
    # "add" per key and reads the replies in order: one round trip.
    return client._store_cmd(b"add", values, expire, False)


def _add_get_many(client: Client, values: dict[str, bytes], expire: int,
                  names: list[str]) -> dict[str, bytes]:
    if values:
        client._store_cmd(b"add", values, expire, True)  # noreply: nothing to read
    return client.get_many(names)


def _delete_get_many(client: Client, deletes: list[str], names: list[str]) -> dict[str, bytes]:
    if deletes:
        client.delete_many(deletes, True)  # noreply: the get's answer comes after them
    return client.get_many(names)


def _expire(timeout: float) -> int:
    if timeout <= 0:
        return -1  # already expired: memcached's 0 would mean "forever"
    if timeout > _RELATIVE_LIMIT:
        return int(time.time() + timeout)
    return int(timeout)
