"""The invalidation strategy: a query also depends on the tables it is declared
to depend on.

The SQL of a query names the tables it reads, and the core tags each query
with them (or with finer tags, when a plugin such as querystash-fields refines
a table). Some tables change without Django writing them:
a table a database trigger maintains, a view over other tables (an unmanaged
model), a summary table another program refreshes. Declare what they are made
from, and a write to any of those tables invalidates their cached queries too::

    QUERYSTASH = {"{{ cookiecutter.section }}": {"tables": {"shop_stock": ["shop_order"]}}}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import querystash

_MEMO_LIMIT = 8192


class DependsOnStrategy(querystash.InvalidationStrategy):
    """Adds the declared tables' tags to every read of a table that depends on them."""

    def __init__(self, tables: Mapping[str, Iterable[str]], ignore_tables: Iterable[str] = ()):
        self.depends_on = {table: _closure(table, tables) for table in tables}
        self.ignore = frozenset(ignore_tables)
        self._tags: dict[frozenset[str], querystash.Dependencies | None] = {}

    def query_tags(self, info):
        # Called on every cached read, hits included: one dict lookup once seen.
        try:
            return self._tags[info.tables]
        except KeyError:
            pass
        extra: set[str] = set()
        for table in info.tables & self.depends_on.keys():
            extra |= self.depends_on[table]
        # Only *adds*: the core keeps the tags of the tables the SQL reads (and
        # whatever other strategies give them), whatever order plugins load in.
        # The same object for the same tables lets the core memoize too.
        tags = querystash.Dependencies(add=sorted(extra)) if extra else None
        if len(self._tags) >= _MEMO_LIMIT:
            self._tags.clear()
        self._tags[info.tables] = tags
        return tags

    def write_tags(self, event):
        # Our tags are table names, and the core already invalidates the
        # tables a statement writes: nothing to add. Saying it here keeps the
        # strategy correct on its own, tested without the core.
        return event.tables - self.ignore


def _closure(table: str, tables: Mapping[str, Iterable[str]]) -> frozenset[str]:
    """Everything ``table`` depends on, directly or through other declared tables."""
    found: set[str] = set()
    todo = list(tables.get(table, ()))
    while todo:
        other = todo.pop()
        if other not in found and other != table:
            found.add(other)
            todo.extend(tables.get(other, ()))
    return frozenset(found)
