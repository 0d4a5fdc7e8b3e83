"""Built-in strategy: a query depends on every table its SQL names.

The table tags are the core's baseline (``Runtime.query_tags`` gives every
read one per table it names, ``Runtime.write_tags`` every write one per table
it writes), so they hold even with this plugin disabled; this strategy states
them for tooling and adds nothing else.
"""

from __future__ import annotations

from .hookspecs import hookimpl
from .strategy import InvalidationStrategy


class TableStrategy(InvalidationStrategy):
    """Tag = table name. Coarse, and always correct."""

    def __init__(self, ignore_tables=()):
        self.ignore = frozenset(ignore_tables)

    # query_tags: not overridden. The table tags are the core's own, and a
    # strategy that doesn't override it is not asked on reads.

    def write_tags(self, event):
        return event.tables - self.ignore


@hookimpl(trylast=True)
def querystash_invalidation_strategy(config):
    return TableStrategy(config["IGNORE_TABLES"])
