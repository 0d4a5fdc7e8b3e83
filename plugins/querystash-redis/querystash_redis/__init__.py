"""querystash-redis: a redis store for querystash (one server, Sentinel or Cluster).

One module, two entry points: DJP loads it for the settings defaults
(``djp`` group), querystash for the settings schema and the storage hook
(``querystash`` group, plugin name ``redis``). The store is used only when
the settings name it: ``QUERYSTASH["redis"]`` written, or
``QUERYSTASH["STORAGE"] = "redis"``.
"""

from __future__ import annotations

from querystash import SettingsSection, hookimpl

from ._config import DEFAULTS, SETTINGS, RedisConfig, defaults, parse
from ._storage import RedisStorage

__all__ = ["DEFAULTS", "SETTINGS", "RedisConfig", "RedisStorage", "defaults", "parse",
           "querystash_storage", "settings"]

#: DJP's settings hook: fills the defaults into a section the user wrote
settings = SETTINGS.djp_hook()


@hookimpl
def querystash_settings_section() -> SettingsSection:
    return SETTINGS


@hookimpl
def querystash_storage(name: str | None, config: dict) -> RedisStorage | None:
    """The redis store, when the core chose ``"redis"``."""
    if name != "redis":
        return None
    return RedisStorage.from_config(config)
