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

    def stamp_value(self, tag: str, found: bytes | None) -> bytes | None:
        """The value ``tag``'s stamp must hold, or ``None`` for an ordinary
        stamp (any value; created random).

        For tags that stand for a registration rather than a version (the
        scheme slots of querystash-fields, say). Asked on a miss only, with
        ``found``, what the read's multi-get found in the stamp (``None``:
        missing): a missing stamp is created with the returned value, and
        the entry is not filled when the store holds anything else."""
        return None

    def stamp_conflict(self, tag: str, found: bytes | None) -> None:
        """Told that ``tag``'s stamp did not hold ``stamp_value(tag)`` on a
        miss (``found``: what it held), so the entry was not filled."""
