"""The invalidation-strategy contract."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from .events import QueryInfo, WriteEvent


class Dependencies:
    """What one strategy says a read depends on, beyond the core's table tags.

    The core gives every read one tag per table its SQL names (the table's
    name, which every write to that table invalidates). A strategy can only
    add to that:

    - ``add``: extra tags the read depends on (a table a trigger maintains
      it from, a tag of the strategy's own). Always kept.
    - ``refine``: ``{table: tags}`` replaces the tag of ``table`` (one the
      read names) with finer ones. Allowed only when the strategy guarantees
      that **every** write to ``table`` produces at least one of those tags
      (from its own ``write_tags()`` or another strategy's); when several
      strategies refine a table, the read depends on all their tags.

    Nothing a strategy returns can drop another strategy's tags. Instances
    are immutable and compared by identity: return the same object for the
    same read (memoize), so the core can memoize the combination too.
    """

    __slots__ = ("add", "refine")

    add: tuple[str, ...]
    refine: Mapping[str, tuple[str, ...]]

    def __init__(self, add: Iterable[str] = (), refine: Mapping[str, Iterable[str]] | None = None):
        object.__setattr__(self, "add", tuple(add))
        object.__setattr__(self, "refine", MappingProxyType(
            {table: tuple(tags) for table, tags in (refine or {}).items()}
        ))

    def __setattr__(self, name, value):
        raise AttributeError("Dependencies are immutable")

    def __repr__(self) -> str:
        return f"Dependencies(add={self.add!r}, refine={dict(self.refine)!r})"


class InvalidationStrategy:
    """Maps reads and writes to tags.

    A cached entry depends on the tags of its query; a write deletes the
    stamps of its tags. Every read depends on the tag of each table it names
    unless a strategy *refines* that table (see :class:`Dependencies`), and
    on every tag any strategy *adds*; every write invalidates the tables it
    writes plus the union of every strategy's ``write_tags()``.

    Correctness rule: a strategy may refine a table only if every write to
    that table produces one of the refining tags; a tag it adds must be
    produced by every write that could change the read through it.
    """

    def query_tags(self, info: QueryInfo) -> Dependencies | Iterable[str] | None:
        """What ``info`` depends on besides its tables' tags: a
        :class:`Dependencies`, or ``None`` for nothing more. A plain list or
        tuple of tags is taken as ``Dependencies(add=tags)``.

        Called on every cached read, hits included: keep it cheap, and return
        the same object for the same read (the core memoizes on it)."""
        return None

    def write_tags(self, event: WriteEvent) -> Iterable[str]:
        """Tags a write invalidates, besides the tables it writes."""
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


def combine(tables: frozenset[str], answers: Iterable[Dependencies]) -> list[str]:
    """The tags of a read naming ``tables``, given every strategy's answer:
    each table's tag unless refined (then every refining strategy's tags),
    plus every added tag. Only ever a superset of what any answer asks for."""
    refined: dict[str, list[str]] = {}
    added: list[str] = []
    for deps in answers:
        added.extend(deps.add)
        for table, tags in deps.refine.items():
            if table in tables:
                refined.setdefault(table, []).extend(tags)
            else:  # not a table the read names: nothing to replace, still kept
                added.extend(tags)
    out: dict[str, None] = {}
    for table in sorted(tables):
        for tag in refined.get(table, (table,)):
            out.setdefault(tag)
    for tag in added:
        out.setdefault(tag)
    # Keep the strategy's own tag objects (querystash-fields' slots are a str
    # subclass it recognises by type).
    return list(out)
