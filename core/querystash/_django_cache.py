"""A :class:`Storage` on Django's cache framework: entries and stamps in a
Django cache (the built-in store's base; ``_django_raw`` refines it for
redis and memcached)."""

from __future__ import annotations

import copy
import re
import threading
from hashlib import blake2b

from django.core.cache import caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.utils.module_loading import import_string

from .storage import Storage

# memcached refuses keys over 250 bytes or with spaces/control characters;
# Django prefixes keys with KEY_PREFIX and VERSION, hence the margin.
_SAFE_KEY = re.compile(r"[\x21-\x7e]{1,200}")


def safe_key(key: str) -> str:
    if _SAFE_KEY.fullmatch(key):
        return key
    return "qs:h:" + blake2b(key.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()


class DjangoCacheStorage(Storage):
    """Entries and stamps in a Django cache (``QUERYSTASH["django"]["cache"]``)."""

    name = "django"

    def __init__(self, alias: str = "default"):
        self.alias = alias
        backend = caches[alias]
        if isinstance(backend, DummyCache):
            raise ValueError(f"CACHES[{alias!r}] is a DummyCache, which cannot store stamps")
        self.shared = not isinstance(backend, LocMemCache)
        #: CACHES[alias] as it was: the core keeps this storage after CACHES
        #: changes (so writes still reach it), when caches[alias] is another cache
        self.params = _snapshot(caches.settings[alias])
        self._identity = _frozen(self.params)
        # Django hands each thread its own cache object (clients are not all
        # thread-safe); keep ours per thread too, without a lookup per call.
        self._local = threading.local()

    @property
    def cache(self):
        try:
            return self._local.cache
        except AttributeError:
            self._local.cache = self._backend()
            return self._local.cache

    def _backend(self):
        if caches.settings.get(self.alias) == self.params:
            return caches[self.alias]
        # CACHES changed since this storage was made: a cache object of our
        # own, on the configuration this storage stands for (what Django's
        # CacheHandler.create_connection does).
        params = dict(self.params)
        backend = params.pop("BACKEND")
        location = params.pop("LOCATION", "")
        return import_string(backend)(location, params)

    def identity(self):
        # The alias is only a name: the backend, location, key prefix and
        # options say where the keys are.
        return self._identity

    def get_many(self, keys):
        safe = [safe_key(k) for k in keys]
        found = self.cache.get_many(safe)
        return [found.get(k) for k in safe]

    def add_many(self, mapping, timeout):
        cache = self.cache
        return {k for k, v in mapping.items() if not cache.add(safe_key(k), v, timeout)}

    def set(self, key, value, timeout):
        self.cache.set(safe_key(key), value, timeout)

    def delete_many(self, keys):
        self.cache.delete_many([safe_key(k) for k in keys])

    def incr_many(self, mapping):
        # cache.incr is atomic on redis and memcached; on a cache whose incr
        # is a get and a set (file, database) two processes flushing at
        # once may lose one's increment. A missing key: add, and if another
        # process added it first, incr after all.
        cache = self.cache
        for key, delta in mapping.items():
            name = safe_key(key)
            try:
                cache.incr(name, delta)
                continue
            except ValueError:  # missing
                pass
            if not cache.add(name, delta, None):
                cache.incr(name, delta)

    def stats(self):
        backend = self.cache
        return {"backend": f"{type(backend).__module__}.{type(backend).__qualname__}",
                "cache alias": self.alias, "shared between processes": self.shared}


def _snapshot(params: dict) -> dict:
    try:
        return copy.deepcopy(params)
    except Exception:  # noqa: BLE001 - an option that can't be copied: the values as they are
        return dict(params)


def _frozen(value):
    """A hashable, order-independent form of a CACHES entry."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
