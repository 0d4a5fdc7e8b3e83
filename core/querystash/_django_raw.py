"""Raw-bytes access to Django's redis and memcached cache backends.

Through the backends' own API, Django unpickles whatever the server holds
before querystash could check its signature, and pymemcache's HashClient,
after one error, answers calls for a while with defaults instead of errors —
a stamp deletion it drops silently is a stale read later. So for these two
backends the core reuses the cache's configuration (servers, key prefix and
version) but talks to the server itself, in bytes.
"""

from __future__ import annotations

import re
import threading

from django.core.cache import caches
from django.core.cache.backends.base import default_key_func
from django.core.cache.backends.redis import RedisCacheClient

from ._django_cache import DjangoCacheStorage, safe_key
from ._noreply import QUIET_LIMIT, RedisQuietSet

#: a key name every cache backend takes as is (what Django's validate_key
#: checks for memcached: no spaces or control characters, at most 250)
_PLAIN_NAME = re.compile(r"[\x21-\x7e]{1,250}")


#: key names remembered per storage at most; beyond, the memo is emptied
NAMES_LIMIT = 10_000


class _RawStorage(DjangoCacheStorage):
    def __init__(self, alias: str = "default"):
        super().__init__(alias)
        #: key -> name (``_names``)
        self._name_memo: dict[str, str] = {}

    def _names(self, keys):
        """The backend's own key names (its KEY_PREFIX and VERSION applied).

        Remembered per key: a hit asks for the same entry and stamps again,
        and ``make_key`` with ``safe_key`` costs about a microsecond a key
        (a memoized call's hit reads one key per table it read). Only with
        Django's own ``KEY_FUNCTION``: another may name a key by more than
        the key (the current tenant, say), and a name remembered would be
        another tenant's."""
        memo = self._name_memo
        try:
            return [memo[k] for k in keys]
        except KeyError:
            pass
        cache = self.cache
        make, plain = cache.make_key, _PLAIN_NAME.fullmatch
        names = [make(safe_key(k)) for k in keys]
        for name in names:
            if not plain(name):
                # Django's own check (a character-by-character Python loop,
                # hence only here): warns, or raises for memcached
                cache.validate_key(name)
        if cache.key_func is default_key_func:
            if len(memo) > NAMES_LIMIT:
                memo.clear()
            memo.update(zip(keys, names, strict=True))  # names the check let through
        return names


class DjangoRedisStorage(_RawStorage):
    """``django.core.cache.backends.redis.RedisCache``, read and written raw.

    With Django's own client and pool class and RESP2 (the defaults), the
    calls go through a ``RedisLane`` on the pool's server: the same commands
    on redis-py's own connections, without the client's per-command
    plumbing (pool checkout and release, wrappers: ~30 µs of a memoized
    call's hit). Otherwise through the client, as Django's backend does."""

    def __init__(self, alias: str = "default"):
        super().__init__(alias)
        self._quiet_set = RedisQuietSet()

    def _connected(self):
        """``(client, lane or None)`` for the primary (write) server: reads
        go there too, as a replica's stamps may lag."""
        backend = self.cache._cache
        if type(backend).get_client is not RedisCacheClient.get_client:  # a custom client class
            return backend.get_client(write=True), None
        # Django's get_client builds a new redis.Redis around the pool on every
        # call (~100 µs with redis-py 8): keep one per pool (and per thread,
        # as Django keeps the cache, hence the pools).
        pool = backend._get_connection_pool(True)
        cached = getattr(self._local, "redis", None)
        if cached is None or cached[0] is not pool:
            client = backend.get_client(write=True)
            cached = self._local.redis = (pool, client, _lane(client))
        return cached[1], cached[2]

    def _client(self):
        return self._connected()[0]

    def get_many(self, keys):
        client, lane = self._connected()
        if lane is not None and keys:
            return lane.execute([("MGET", *self._names(keys))], 1)[0]
        return client.mget(self._names(keys))

    def add_many(self, mapping, timeout):
        if not mapping:
            return set()
        client, lane = self._connected()
        if lane is not None and _plain_ttl(timeout):
            results = lane.execute(self._adds(mapping, timeout), len(mapping))
        else:
            pipe = client.pipeline(transaction=False)
            for name, value in zip(self._names(mapping), mapping.values(), strict=True):
                pipe.set(name, value, ex=timeout, nx=True)
            results = pipe.execute()
        return {k for k, added in zip(mapping, results, strict=True) if not added}

    def add_get_many(self, mapping, keys, timeout):
        # In order on one connection: the MGET sees the stamps just added.
        client, lane = self._connected()
        if lane is not None and keys and _plain_ttl(timeout):
            commands = [*self._adds(mapping, timeout), ("MGET", *self._names(keys))]
            return lane.execute(commands, len(commands))[-1]
        pipe = client.pipeline(transaction=False)
        for name, value in zip(self._names(mapping), mapping.values(), strict=True):
            pipe.set(name, value, ex=timeout, nx=True)
        pipe.mget(self._names(keys))
        return pipe.execute()[-1]

    def delete_get_many(self, delete, keys):
        client, lane = self._connected()
        if lane is not None and keys:
            commands = [("DEL", *self._names(delete))] if delete else []
            commands.append(("MGET", *self._names(keys)))
            return lane.execute(commands, len(commands))[-1]
        pipe = client.pipeline(transaction=False)
        if delete:
            pipe.delete(*self._names(delete))
        pipe.mget(self._names(keys))
        return pipe.execute()[-1]

    def set(self, key, value, timeout):
        # An entry fill: not acknowledged (see _noreply), a lost one is a miss.
        client, lane = self._connected()
        self._quiet_set(client if lane is None else lane.quiet_client,
                        self._names([key])[0], value, timeout)

    def delete_many(self, keys):
        if not keys:
            return
        client, lane = self._connected()
        if lane is not None:
            lane.execute([("DEL", *self._names(keys))], 1)
        else:
            client.delete(*self._names(keys))

    def incr_many(self, mapping):
        if not mapping:
            return
        client, lane = self._connected()
        pairs = zip(self._names(mapping), mapping.values(), strict=True)
        if lane is not None:
            lane.execute([("INCRBY", name, delta) for name, delta in pairs], len(mapping))
            return
        pipe = client.pipeline(transaction=False)  # one round trip
        for name, delta in pairs:
            pipe.incrby(name, delta)
        pipe.execute()

    def _adds(self, mapping, timeout) -> list[tuple]:
        """``SET NX`` with a TTL per key, as redis-py's ``set(ex=..., nx=True)`` sends it."""
        return [("SET", name, value, "EX", timeout, "NX")
                for name, value in zip(self._names(mapping), mapping.values(), strict=True)]


def _lane(client):
    """A ``RedisLane`` on the client's pool, or None where one would not
    answer as the client does: another pool class (a blocking pool waits
    for a connection, a Sentinel pool follows the master), or RESP3 (push
    messages may come between replies; redis-py's pool handles those)."""
    import redis

    pool = client.connection_pool
    if type(pool) is not redis.ConnectionPool:
        return None
    if str(pool.connection_kwargs.get("protocol") or 2) != "2":
        return None
    from ._redis_lane import RedisLane

    return RedisLane(client)


def _plain_ttl(timeout) -> bool:
    # What redis-py packs as given (it checks and converts anything else).
    return type(timeout) is int and timeout > 0


class DjangoMemcachedStorage(_RawStorage):
    """``django.core.cache.backends.memcached.PyMemcacheCache``, through a
    client of our own: no serializer, errors raised, and thrown away after
    any error so it never keeps a "failed server" state that skips calls."""

    def __init__(self, alias: str = "default"):
        super().__init__(alias)
        backend = caches[alias]
        options = backend._options
        self._config = {
            "servers": backend._servers,
            "connect_timeout": options.get("connect_timeout"),
            "timeout": options.get("timeout"),
        }
        self._backend_timeout = backend.get_backend_timeout
        self._lock = threading.Lock()
        self._memcached = None

    def _client(self):
        client = self._memcached
        if client is None:
            with self._lock:
                client = self._memcached = self._memcached or self._new_client()
        return client

    def _new_client(self):
        from pymemcache.client.base import PooledClient
        from pymemcache.client.hash import HashClient

        options = {
            "connect_timeout": self._config["connect_timeout"],
            "timeout": self._config["timeout"],
            "default_noreply": False,
            # small requests, and fills not waiting for their reply: with
            # Nagle on, the request after a fill would wait for an ACK
            "no_delay": True,
        }
        servers = self._config["servers"]
        if len(servers) == 1:
            # One server: nothing to place, so no HashClient hashing every key
            # (pure-Python murmur3, ~10 µs a key) to find it.
            return PooledClient(servers[0], **options)
        return HashClient(servers, use_pooling=True, ignore_exc=False, retry_attempts=0,
                          **options)

    def _run(self, method, *args):
        try:
            return getattr(self._client(), method)(*args)
        except Exception:
            self._memcached = None
            raise

    def get_many(self, keys):
        names = self._names(keys)
        found = self._run("get_many", names)
        return [found.get(name) for name in names]

    def add_many(self, mapping, timeout):
        expire = self._backend_timeout(timeout)
        existed = set()
        for key, name in zip(mapping, self._names(mapping), strict=True):
            if not self._run("add", name, mapping[key], expire, False):
                existed.add(key)
        return existed

    def set(self, key, value, timeout):
        # An entry fill: small ones are not acknowledged (noreply, see _noreply).
        self._run("set", self._names([key])[0], value, self._backend_timeout(timeout),
                  len(value) <= QUIET_LIMIT)

    def delete_many(self, keys):
        if keys:
            self._run("delete_many", self._names(keys), False)

    def incr_many(self, mapping):
        # memcached's incr does not create a key: add it, and if another
        # process added it meanwhile, incr after all.
        for name, delta in zip(self._names(mapping), mapping.values(), strict=True):
            if self._run("incr", name, delta, False) is not None:
                continue
            if not self._run("add", name, str(delta).encode(), 0, False):
                self._run("incr", name, delta, False)

    def close(self):
        client, self._memcached = self._memcached, None
        if client is not None:
            client.close()
