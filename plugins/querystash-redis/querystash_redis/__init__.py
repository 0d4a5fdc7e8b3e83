"""querystash-redis: a redis store for querystash (one server, Sentinel or Cluster).

One module, two markers: ``settings`` is a DJP hook (fills the ``"redis"``
section's defaults), ``querystash_storage`` a querystash hook.
"""

from __future__ import annotations

from pluggy import HookimplMarker

from querystash import hookimpl

from ._config import DEFAULTS, RedisConfig, defaults, parse
from ._storage import RedisStorage

# djp.hookimpl is this marker. Importing djp here instead would, when this
# module is imported first, make djp load its entry points — this module
# among them, half-imported — and lose the settings hook.
djp_hookimpl = HookimplMarker("djp")

__all__ = ["DEFAULTS", "RedisConfig", "RedisStorage", "parse", "querystash_storage", "settings"]


@djp_hookimpl
def settings(current_settings: dict) -> None:
    """Fill ``QUERYSTASH["redis"]`` with the defaults, keeping the user's values."""
    config = current_settings.setdefault("QUERYSTASH", {})
    if not isinstance(config, dict):
        return  # the core's checks report it
    section = config.setdefault("redis", {})
    if isinstance(section, dict):  # else: parse() names the mistake at start-up
        for key, value in defaults().items():
            section.setdefault(key, value)


@hookimpl
def querystash_storage(name: str | None, config: dict) -> RedisStorage | None:
    """The redis store, when ``STORAGE`` is unset or ``"redis"``."""
    if name not in (None, "redis"):
        return None
    return RedisStorage.from_config(config)
