"""Raw-bytes access to Django's redis and memcached cache backends.

Through the backends' own API, Django unpickles whatever the server holds
before querystash could check its signature, and pymemcache's HashClient,
after one error, answers calls for a while with defaults instead of errors —
a stamp deletion it drops silently is a stale read later. So for these two
backends the core reuses the cache's configuration (servers, key prefix and
version) but talks to the server itself, in bytes.
"""

from __future__ import annotations

import threading

from django.core.cache import caches

from .default_storage import DjangoCacheStorage, safe_key


class _RawStorage(DjangoCacheStorage):
    def _names(self, keys):
        """The backend's own key names (its KEY_PREFIX and VERSION applied)."""
        make = self.cache.make_and_validate_key
        return [make(safe_key(k)) for k in keys]


class DjangoRedisStorage(_RawStorage):
    """``django.core.cache.backends.redis.RedisCache``, read and written raw."""

    def _client(self):
        # The primary (write) server for reads too: a replica's stamps may lag.
        return self.cache._cache.get_client(write=True)

    def get_many(self, keys):
        return self._client().mget(self._names(keys))

    def add_many(self, mapping, timeout):
        pipe = self._client().pipeline(transaction=False)
        for name, value in zip(self._names(mapping), mapping.values(), strict=True):
            pipe.set(name, value, ex=timeout, nx=True)
        results = pipe.execute()
        return {k for k, added in zip(mapping, results, strict=True) if not added}

    def set(self, key, value, timeout):
        self._client().set(self._names([key])[0], value, ex=timeout)

    def delete_many(self, keys):
        if keys:
            self._client().delete(*self._names(keys))


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
            from pymemcache.client.hash import HashClient

            with self._lock:
                client = self._memcached = self._memcached or HashClient(
                    self._config["servers"],
                    connect_timeout=self._config["connect_timeout"],
                    timeout=self._config["timeout"],
                    use_pooling=True,
                    ignore_exc=False,
                    retry_attempts=0,
                    default_noreply=False,
                )
        return client

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
        self._run("set", self._names([key])[0], value, self._backend_timeout(timeout), False)

    def delete_many(self, keys):
        if keys:
            self._run("delete_many", self._names(keys), False)

    def close(self):
        client, self._memcached = self._memcached, None
        if client is not None:
            client.close()
