"""The store a mode uses, seen from outside the library: flush and measure."""

from __future__ import annotations

import pickle
import re


class Store:
    def __init__(self, kind: str | None, redis_url: str = "", memcached: str = ""):
        self.kind = kind
        if kind == "redis":
            import redis

            self.redis = redis.Redis.from_url(redis_url)
        elif kind == "memcached":
            from pymemcache.client.base import Client

            host, port = memcached.rsplit(":", 1)
            self.memcached = Client((host, int(port)))

    def flush(self) -> None:
        if self.kind == "redis":
            self.redis.flushdb()
        elif self.kind == "memcached":
            self.memcached.flush_all(noreply=False)
        elif self.kind == "locmem":
            from django.core.cache import caches

            caches["default"].clear()
            for store in _local_stores():
                store.clear()

    def memory(self, invalidation_key: re.Pattern | None = None) -> dict:
        """Store-side size: bytes and items, plus the invalidation data where
        its keys can be told apart (querystash stamps, cacheops conj sets)."""
        if self.kind == "redis":
            # used_memory moves with the allocator and client buffers; the sum of
            # MEMORY USAGE over the keys is the data set itself.
            keys = list(self.redis.scan_iter(count=1000))
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key, samples=0)
            sizes = [n or 0 for n in pipe.execute()] if keys else []
            out = {"bytes": sum(sizes), "items": len(keys),
                   "used_memory": self.redis.info("memory")["used_memory"]}
            if invalidation_key is not None:
                inv = [n for key, n in zip(keys, sizes, strict=True)
                       if invalidation_key.search(key.decode(errors="replace"))]
                out["invalidation_items"] = len(inv)
                out["invalidation_bytes"] = sum(inv)
            return out
        if self.kind == "memcached":
            stats = self.memcached.stats()
            return {"bytes": stats[b"bytes"], "items": stats[b"curr_items"]}
        if self.kind == "locmem":
            from django.core.cache import caches

            cache = dict(caches["default"]._cache)  # key -> pickled value
            for store in _local_stores():
                # querystash's in-process store keeps objects: sized as pickled
                cache.update((k, pickle.dumps(v[1])) for k, v in list(store._data.items()))
            out = {"bytes": sum(len(k) + len(v) for k, v in cache.items()), "items": len(cache)}
            if invalidation_key is not None:
                keys = [k for k in cache if invalidation_key.search(k)]
                out["invalidation_items"] = len(keys)
                out["invalidation_bytes"] = sum(len(k) + len(cache[k]) for k in keys)
            return out
        return {}


def _local_stores() -> list:
    """querystash's in-process stores (what a LocMemCache alias becomes)."""
    try:
        from querystash import _localstore
    except ImportError:
        return []
    return list(_localstore._by_location.values())


def invalidation_pattern(lib: str) -> re.Pattern | None:
    if lib == "querystash":
        return re.compile(r"qs:t:")
    if lib == "cacheops":
        return re.compile(r"^conj:")
    return None  # cachalot's table keys are digests, like its query keys
