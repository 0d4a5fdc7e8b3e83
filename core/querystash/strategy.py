"""The invalidation-strategy contract."""

from __future__ import annotations

from collections.abc import Iterable

from .events import QueryInfo, WriteEvent


class InvalidationStrategy:
    """Maps reads and writes to tags.

    A cached entry depends on the tags of its query; a write deletes the stamps
    of its tags. Correctness rule: for every query a strategy owns, every write
    that could change its result must produce at least one of its tags —
    from *some* strategy, since writes use the union of all strategies.
    """

    def query_tags(self, info: QueryInfo) -> list[str] | None:
        """Tags ``info`` depends on, or ``None`` to leave it to the next
        strategy. Called on every cached read, hits included: keep it cheap."""
        return None

    def write_tags(self, event: WriteEvent) -> Iterable[str]:
        """Tags a write invalidates."""
        return ()
