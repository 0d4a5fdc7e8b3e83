"""The redis store: entries and stamps, one MGET per hit.

Key layout (README: "Keys and Redis Cluster"):

- entry ``qs:1:e:<hash>`` -> ``<key_prefix>qs:1:e:<hash>``: spread over the
  cluster by its own hash;
- stamp ``qs:t:<tag>`` -> ``<key_prefix>{qs:t:}<tag>``: every stamp in one
  slot, so creating stamps is one pipeline to one node and invalidating many
  tags is one ``DEL``.

A hit reads the entry and its stamps: one MGET on a single server; in a
cluster one MGET per slot (entry slot, stamp slot), pipelined, so the two
nodes are asked at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

import redis

from querystash import GLOBAL_TAG, RedisQuietSet, Storage, StorageError, stamp_key

from ._config import RedisConfig, parse
from ._connect import Connection
from ._dogpile import Leases, lease_name

logger = logging.getLogger("querystash")


class RedisStorage(Storage):
    """Entries and stamps in redis: one server, Sentinel, or Cluster."""

    name = "redis"
    shared = True

    def __init__(self, config: RedisConfig, core_prefix: str = "qs"):
        self.config = config
        self.connection = Connection(config)
        self._stamp_prefix = stamp_key("", core_prefix)
        self._stamp_head = f"{config.key_prefix}{{{self._stamp_prefix}}}"
        self._cluster = config.mode == "cluster"
        self._leases = Leases(config.dogpile) if config.dogpile else None
        # One server, no leases, no WAIT: the request path's calls go through
        # the lane (querystash.RedisLane), redis-py's connections without its per-command
        # plumbing. The same commands, so the same replies. RESP2 only: RESP3
        # may interleave push messages (redis-py's pool handles those) with replies.
        self._fast = (config.mode == "single" and not config.dogpile
                      and not config.wait_replicas and _resp2(config.url))
        # Sentinel failover bookkeeping (see _after).
        self._watch_master = config.mode == "sentinel"
        self._master: tuple[str, int] | None = None
        self._failovers = 0
        self._owes_global = False
        self._failover_lock = threading.RLock()
        self._quiet_set = RedisQuietSet()

    @classmethod
    def from_config(cls, config: dict) -> RedisStorage:
        """From the whole ``QUERYSTASH`` setting (raises ``ValueError`` on a bad section)."""
        return cls(parse(config.get("redis")), config.get("KEY_PREFIX", "qs"))

    @property
    def client(self):
        return self.connection.client

    def redis_key(self, key: str) -> str:
        """The redis key name of a core key."""
        if key.startswith(self._stamp_prefix):
            return self._stamp_head + key[len(self._stamp_prefix):]
        return self.config.key_prefix + key

    # -- the Storage contract -------------------------------------------------------
    #
    # A failure is raised as a StorageError naming the store and its address:
    # the core logs it as is, and "Connection refused" alone says not where.

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        try:
            if self._fast and keys:
                return self.connection.lane.execute([("MGET", *map(self.redis_key, keys))], 1)[0]
            return self._get_many(keys)
        except (redis.RedisError, OSError) as exc:
            raise self._error(exc) from exc

    def add_many(self, mapping: Mapping[str, bytes], timeout: int) -> set[str]:
        try:
            if self._fast and mapping:
                results = self.connection.lane.execute(self._adds(mapping, timeout), len(mapping))
                return {k for k, added in zip(mapping, results, strict=True) if not added}
            return self._add_many(mapping, timeout)
        except (redis.RedisError, OSError) as exc:
            raise self._error(exc) from exc

    def add_get_many(self, mapping: Mapping[str, bytes], keys: Sequence[str],
                     timeout: int) -> list[bytes | None]:
        try:
            if self._fast and keys:
                # In order on one connection: the MGET sees the stamps just added.
                commands = [*self._adds(mapping, timeout), ("MGET", *map(self.redis_key, keys))]
                return self.connection.lane.execute(commands, len(commands))[-1]
            return self._add_get_many(mapping, keys, timeout)
        except (redis.RedisError, OSError) as exc:
            raise self._error(exc) from exc

    def delete_get_many(self, delete: Sequence[str], keys: Sequence[str]) -> list[bytes | None]:
        try:
            if self._fast and keys:
                commands = [("DEL", *map(self.redis_key, delete))] if delete else []
                commands.append(("MGET", *map(self.redis_key, keys)))
                return self.connection.lane.execute(commands, len(commands))[-1]
            if self._cluster or self.config.wait_replicas or not delete:
                self._delete_many(delete)
                return self._get_many(keys)
            generation = self._before()
            pipe = self.client.pipeline(transaction=False)
            pipe.delete(*[self.redis_key(k) for k in delete])
            pipe.mget([self.redis_key(k) for k in keys])
            values = pipe.execute()[-1]
            if self._after(generation):
                return [None] * len(keys)
            return values
        except (redis.RedisError, OSError) as exc:
            raise self._error(exc) from exc

    def set(self, key: str, value: bytes, timeout: int) -> None:
        try:
            self._set(key, value, timeout)
        except (redis.RedisError, OSError) as exc:
            raise self._error(exc) from exc

    def delete_many(self, keys: Sequence[str]) -> None:
        try:
            if self._fast and keys:
                self.connection.lane.execute([("DEL", *map(self.redis_key, keys))], 1)
                return
            self._delete_many(keys)
        except (redis.RedisError, OSError) as exc:
            raise self._error(exc) from exc

    def incr_many(self, mapping: Mapping[str, int]) -> None:
        try:
            self._incr_many(mapping)
        except (redis.RedisError, OSError) as exc:
            raise self._error(exc) from exc

    @property
    def address(self) -> str:
        """Where the store is, without credentials: "127.0.0.1:6379/0", a
        socket path, or the Sentinel / Cluster nodes."""
        config = self.config
        if config.mode == "single":
            url = urlsplit(config.url)
            if url.scheme == "unix":
                return url.path
            db = url.path.lstrip("/") or str(config.db)
            return f"{url.hostname}:{url.port or 6379}/{db}"
        return self.connection.describe()

    def _error(self, exc: BaseException) -> StorageError:
        return StorageError(f"redis at {self.address}: {exc!r}")


    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        names = [self.redis_key(k) for k in keys]
        generation = self._before()
        if self._leases is not None and names and not keys[0].startswith(self._stamp_prefix):
            values = self._leases.get(self._mget, self._take_lease, names)
        else:
            values = self._mget(names)
        if self._after(generation):
            return [None] * len(keys)  # may have been read before the failover was settled
        return values

    def _add_many(self, mapping: Mapping[str, bytes], timeout: int) -> set[str]:
        if not mapping:
            return set()
        generation = self._before()
        pipe = self.client.pipeline(transaction=False)
        ttl = _ttl(timeout)
        for key, value in mapping.items():
            pipe.set(self.redis_key(key), value, ex=ttl, nx=True)
        results = pipe.execute()
        self._after(generation)
        return {k for k, added in zip(mapping, results, strict=True) if not added}

    def _add_get_many(self, mapping: Mapping[str, bytes], keys: Sequence[str],
                      timeout: int) -> list[bytes | None]:
        if self._leases is not None or not mapping:
            # Leases: a reader takes the entry's lease when it finds a stamp
            # missing (an entry with every stamp looks like a hit, and is not
            # waited for); stamps added first would hide that. So the plain
            # read: the core creates the stamps it finds missing (add_many).
            return self._get_many(keys)
        if self._cluster:
            # The entry and the stamps live in different slots (one MGET per
            # slot): the contract's two calls.
            self._add_many(mapping, timeout)
            return self._get_many(keys)
        generation = self._before()
        pipe = self.client.pipeline(transaction=False)
        ttl = _ttl(timeout)
        for key, value in mapping.items():
            pipe.set(self.redis_key(key), value, ex=ttl, nx=True)
        # In order on one connection: the MGET sees the stamps just added.
        pipe.mget([self.redis_key(k) for k in keys])
        values = pipe.execute()[-1]
        if self._after(generation):
            return [None] * len(keys)  # may have been read before the failover was settled
        return values

    def _set(self, key: str, value: bytes, timeout: int) -> None:
        name = self.redis_key(key)
        generation = self._before()
        if self._leases is None and not self._cluster:
            # An entry fill: not acknowledged (querystash.RedisQuietSet), a lost one
            # is a later miss. Saves a round trip on every miss.
            client = self.connection.lane.quiet_client if self._fast else self.client
            self._quiet_set(client, name, value, _ttl(timeout))
        elif self._leases is None:
            self.client.set(name, value, ex=_ttl(timeout))
        else:
            # Same slot: one pipeline to one node, and the waiters wake up.
            pipe = self.client.pipeline(transaction=False)
            pipe.set(name, value, ex=_ttl(timeout))
            pipe.delete(lease_name(name))
            pipe.execute()
        self._after(generation)

    def _delete_many(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        names = [self.redis_key(k) for k in keys]
        generation = self._before()
        if self.config.wait_replicas:
            self._delete_replicated(names)
        else:
            # Stamps share one slot: a single DEL. (RedisCluster.delete splits
            # other keys by slot and pipelines them.)
            self.client.delete(*names)
        self._after(generation)

    def _incr_many(self, mapping: Mapping[str, int]) -> None:
        # The site-wide counters, from a background thread: INCRBY each, in
        # one pipeline (a Cluster's pipeline splits it by node). No TTL: a
        # few keys per model, zeroed by ``manage.py querystash stats --reset``.
        if not mapping:
            return
        generation = self._before()
        pipe = self.client.pipeline(transaction=False)
        for key, delta in mapping.items():
            pipe.incrby(self.redis_key(key), delta)
        pipe.execute()
        self._after(generation)

    def stats(self) -> dict:
        from ._stats import collect

        return collect(self)

    def identity(self):
        # The server(s), database and key prefix, and where the core's stamps go.
        return (self.config, self._stamp_prefix)

    def close(self) -> None:
        self.connection.close()

    # -- helpers --------------------------------------------------------------------

    def _adds(self, mapping: Mapping[str, bytes], timeout: int) -> list[tuple]:
        """SET NX with a TTL for each key, as redis-py's ``set(nx=True, ex=...)`` sends it."""
        ttl = _ttl(timeout)
        return [("SET", self.redis_key(k), v, "NX", "EX", ttl) for k, v in mapping.items()]

    def _mget(self, names: list[str]) -> list[bytes | None]:
        if self._cluster:
            # One MGET per slot, pipelined: the nodes are asked at once.
            return self.client.mget_nonatomic(names)
        return self.client.mget(names)

    def _take_lease(self, name: str, lease_ms: int) -> bool:
        return bool(self.client.set(name, b"1", px=lease_ms, nx=True))

    def _delete_replicated(self, names: list[str]) -> None:
        """DEL, then WAIT until ``wait_replicas`` replicas have it: an
        invalidation a failover could lose is reported as failed instead, and
        the core settles it by invalidating everything."""
        wanted = self.config.wait_replicas
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(*names)
        pipe.execute_command("WAIT", wanted, max(1, int(self.config.socket_timeout * 1000)))
        acked = pipe.execute()[1]
        if acked < wanted:
            raise StorageError(f"invalidation reached {acked} of {wanted} replicas")

    # -- Sentinel failover ----------------------------------------------------------
    #
    # Replication is asynchronous: stamp deletions the old master acknowledged
    # but never passed on are missing on the new one, and the entries they
    # killed look valid again. So when this process sees the master change, it
    # deletes the global stamp (every entry depends on it) on the new master,
    # and treats any read that may have reached the new master first as a miss.

    def _before(self) -> int:
        if self._watch_master:
            self.connection.check_master()
            self._detect()
        if self._owes_global:
            self._pay_global()
        return self._failovers

    def _after(self, generation: int) -> bool:
        """True if a failover was seen since ``generation`` (the call's result
        may predate the global invalidation)."""
        if not self._watch_master:
            return False
        self._detect()
        return self._failovers != generation

    def _detect(self) -> None:
        address = self.connection.master_address()
        if address is None or address == self._master:
            return
        with self._failover_lock:
            previous, self._master = self._master, address
            if previous is None or previous == address:
                return
            logger.warning("querystash: redis master moved from %s:%s to %s:%s; "
                           "invalidating everything", *previous, *address)
            self._owes_global = True
            try:
                self._pay_global()
            finally:
                # Counted after the deletion: a call that starts before it
                # lands must see a new generation.
                self._failovers += 1

    def _pay_global(self) -> None:
        with self._failover_lock:
            if self._owes_global:
                self.client.delete(self.redis_key(self._stamp_prefix + GLOBAL_TAG))
                self._owes_global = False


def _resp2(url: str) -> bool:
    return parse_qs(urlsplit(url).query).get("protocol", ["2"])[-1] == "2"


def _ttl(timeout: int) -> int:
    # Every key gets a TTL: memory stays bounded by redis' own eviction.
    return max(1, int(timeout or 1))
