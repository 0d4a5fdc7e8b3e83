"""querystash: automatic caching of Django ORM query results.

Importing this package never touches the ORM; the Django side starts in
``apps.QuerystashConfig.ready()``.
"""

from ._encode import UnencodableValue, encode
from .events import Event, QueryInfo, WriteEvent
from .exceptions import Uncacheable
from .hookspecs import hookimpl
from .storage import Storage, StorageError
from .strategy import Dependencies, InvalidationStrategy
from .version import __version__

__all__ = [
    "Dependencies",
    "Event",
    "InvalidationStrategy",
    "QueryInfo",
    "Storage",
    "StorageError",
    "Uncacheable",
    "UnencodableValue",
    "WriteEvent",
    "__version__",
    "encode",
    "hookimpl",
    "invalidate_all",
    "invalidate_models",
    "invalidate_tags",
    "reset_stats",
    "stats",
]


def __getattr__(name):
    # The user API needs the app registry: import it on first use.
    if name in ("invalidate_all", "invalidate_models", "invalidate_tags", "reset_stats", "stats"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'querystash' has no attribute {name!r}")
