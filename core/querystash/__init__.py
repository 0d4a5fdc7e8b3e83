"""querystash: automatic caching of Django ORM query results.

Importing this package never touches the ORM; the Django side starts in
``apps.QuerystashConfig.ready()``.
"""

from ._encode import UnencodableValue, encode
from ._memoize import memoize
from ._memoize import stats as memoize_stats
from ._noreply import QUIET_LIMIT, RedisQuietSet
from ._reasons import REASONS
from ._switch import disabled, is_disabled
from ._tags import GLOBAL_TAG, stamp_key
from .events import Event, QueryInfo, WriteEvent
from .exceptions import Uncacheable
from .handle import RuntimeHandle
from .hookspecs import hookimpl
from .patching import Patches
from .schema import Setting, SettingsSection
from .storage import Storage, StorageError
from .strategy import Dependencies, InvalidationStrategy
from .version import __version__

__all__ = [
    "GLOBAL_TAG",
    "QUIET_LIMIT",
    "REASONS",
    "Dependencies",
    "Event",
    "InvalidationStrategy",
    "Patches",
    "QueryInfo",
    "RedisLane",
    "RedisQuietSet",
    "RuntimeHandle",
    "Setting",
    "SettingsSection",
    "Storage",
    "StorageError",
    "Uncacheable",
    "UnencodableValue",
    "Explanation",
    "WriteEvent",
    "__version__",
    "cache_fill",
    "cache_hit",
    "cache_invalidated",
    "cache_miss",
    "cache_stale",
    "disabled",
    "encode",
    "explain",
    "hookimpl",
    "invalidate_all",
    "invalidate_models",
    "invalidate_tags",
    "is_disabled",
    "memoize",
    "memoize_stats",
    "reset_stats",
    "stamp_key",
    "stats",
    "uses_raw_sql",
]


def __getattr__(name):
    # The user API needs the app registry: import it on first use.
    if name in ("invalidate_all", "invalidate_models", "invalidate_tags", "reset_stats", "stats"):
        from . import api

        return getattr(api, name)
    if name in ("explain", "Explanation"):  # the read path's modules import the ORM
        from . import _explain

        return getattr(_explain, name)
    if name in ("cache_fill", "cache_hit", "cache_invalidated", "cache_miss", "cache_stale"):
        from . import signals

        return getattr(signals, name)
    if name == "RedisLane":  # needs redis-py, which only redis stores install
        from ._redis_lane import RedisLane

        return RedisLane
    if name == "uses_raw_sql":  # imports the ORM
        from .default_eligibility import uses_raw_sql

        return uses_raw_sql
    raise AttributeError(f"module 'querystash' has no attribute {name!r}")
