"""Built-in storage on Django's cache framework (locmem unless configured):
the ``querystash_storage`` hook of the built-in defaults."""

from __future__ import annotations

from django.core.cache import caches
from django.core.cache.backends.memcached import PyMemcacheCache
from django.core.cache.backends.redis import RedisCache

from ._django_cache import DjangoCacheStorage, safe_key
from ._django_raw import DjangoMemcachedStorage, DjangoRedisStorage
from .conf import DJANGO_SECTION
from .hookspecs import hookimpl
from .schema import SettingsSection

__all__ = ["DjangoCacheStorage", "for_alias", "querystash_storage", "safe_key"]

#: ``QUERYSTASH["django"]``: the Django cache alias the built-in store uses
SETTINGS = DJANGO_SECTION


@hookimpl(trylast=True)
def querystash_settings_section() -> SettingsSection:
    return SETTINGS


@hookimpl(trylast=True)
def querystash_storage(name, config):
    if name not in (None, "django"):
        return None
    return for_alias(SETTINGS.clean(config.get("django"))["cache"])


def for_alias(alias: str) -> DjangoCacheStorage:
    """The storage for a Django cache alias: raw bytes for redis and memcached."""
    backend = caches[alias]
    if isinstance(backend, RedisCache):
        return DjangoRedisStorage(alias)
    if isinstance(backend, PyMemcacheCache):
        return DjangoMemcachedStorage(alias)
    return DjangoCacheStorage(alias)
