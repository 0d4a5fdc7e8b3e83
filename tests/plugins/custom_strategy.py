"""A strategy that refines Book queries into one tag of its own."""

from __future__ import annotations

from querystash import Dependencies, InvalidationStrategy, hookimpl

TAG = "custom:books"

#: every write to testapp_book produces TAG (write_tags): a valid refinement
BOOKS = Dependencies(refine={"testapp_book": [TAG]})


class BookTagStrategy(InvalidationStrategy):
    def query_tags(self, info):
        if info.tables == frozenset({"testapp_book"}):
            return BOOKS
        return None  # everything else: nothing to add, the table tags stay

    def write_tags(self, event):
        return [TAG] if "testapp_book" in event.tables else []


@hookimpl
def querystash_invalidation_strategy(config):
    return BookTagStrategy()
