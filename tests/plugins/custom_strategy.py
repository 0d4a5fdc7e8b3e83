"""A strategy that owns Book queries with one tag of its own."""

from __future__ import annotations

from querystash import InvalidationStrategy, hookimpl

TAG = "custom:books"


class BookTagStrategy(InvalidationStrategy):
    def query_tags(self, info):
        if info.tables == frozenset({"testapp_book"}):
            return [TAG]
        return None  # everything else: the next strategy (the table default)

    def write_tags(self, event):
        return [TAG] if "testapp_book" in event.tables else []


@hookimpl
def querystash_invalidation_strategy(config):
    return BookTagStrategy()
