"""querystash-memcached: a memcached store for querystash, on pymemcache.

One module, two entry points: DJP loads it for the settings defaults
(``djp`` group), querystash for the settings schema and the storage hook
(``querystash`` group, plugin name ``memcached``). The store is used only
when the settings name it: ``QUERYSTASH["memcached"]`` written, or
``QUERYSTASH["STORAGE"] = "memcached"``.
"""

from __future__ import annotations

from querystash import SettingsSection, hookimpl

from ._config import DEFAULTS, SETTINGS
from .storage import MemcachedStorage

__all__ = ["DEFAULTS", "SETTINGS", "MemcachedStorage", "querystash_storage", "settings"]

#: DJP's settings hook: fills the defaults into a section the user wrote
settings = SETTINGS.djp_hook()


@hookimpl
def querystash_settings_section() -> SettingsSection:
    return SETTINGS


@hookimpl
def querystash_storage(name: str | None, config: dict) -> MemcachedStorage | None:
    if name != "memcached":
        return None
    return MemcachedStorage(**SETTINGS.validated(config.get("memcached")))
