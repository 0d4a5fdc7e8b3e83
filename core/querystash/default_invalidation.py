"""Built-in strategy: a query depends on every table its SQL names."""

from __future__ import annotations

from .hookspecs import hookimpl
from .strategy import InvalidationStrategy


class TableStrategy(InvalidationStrategy):
    """Tag = table name. Coarse, and always correct."""

    def __init__(self, ignore_tables=()):
        self.ignore = frozenset(ignore_tables)
        self._sorted: dict[frozenset, list[str]] = {}

    def query_tags(self, info):
        try:
            return self._sorted[info.tables]
        except KeyError:
            tags = self._sorted[info.tables] = sorted(info.tables)
            return tags

    def write_tags(self, event):
        return event.tables - self.ignore


@hookimpl(trylast=True)
def querystash_invalidation_strategy(config):
    return TableStrategy(config["IGNORE_TABLES"])
