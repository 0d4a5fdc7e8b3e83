"""querystash-memcached: a memcached store for querystash, on pymemcache.

One module, two entry points: DJP loads it for the settings defaults
(``djp`` group), querystash for the storage hook (``querystash`` group,
plugin name ``memcached``).
"""

from __future__ import annotations

import copy

from pluggy import HookimplMarker

from querystash import hookimpl

from ._config import DEFAULTS
from .storage import MemcachedStorage

__all__ = ["DEFAULTS", "MemcachedStorage", "querystash_storage", "settings"]

# djp.hookimpl is this marker. Importing djp here would make djp load its
# entry points, this module among them, while it is half imported: pluggy
# would register it before ``settings`` exists and the hook would be lost.
djp_hookimpl = HookimplMarker("djp")


@djp_hookimpl
def settings(current_settings: dict) -> None:
    """Fill ``QUERYSTASH["memcached"]`` with the defaults the user left out."""
    config = current_settings.setdefault("QUERYSTASH", {})
    if not isinstance(config, dict):
        return  # the core's system check reports it
    section = config.setdefault("memcached", {})
    if isinstance(section, dict):
        for key, value in DEFAULTS.items():
            section.setdefault(key, copy.deepcopy(value))


@hookimpl
def querystash_storage(name: str | None, config: dict) -> MemcachedStorage | None:
    if name not in (None, "memcached"):
        return None
    return MemcachedStorage(**_section(config.get("memcached")))


def _section(value: object) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f'QUERYSTASH["memcached"] must be a dict, not {type(value).__name__}')
    return value
