"""Public API: tell querystash-fields which rows a write statement changes.

By default every write statement the fields plugin cannot attribute values to
invalidates the *family* of the table it writes (``T#``: every field-scoped
query on ``T``). A plugin that knows the old or new rows of a statement can do
better::

    from querystash_fields import capture

    if capture.active(alias):
        with capture.writing(alias, table, "delete") as statement:
            rows = run_the_delete()                       # exactly one table
            statement.settle([(table, model, row, None) for row in rows])

Inside ``writing()``, statements of that kind on exactly that table do not
invalidate the family; once one has run, the caller must ``settle()`` the rows
it wrote, or the family is invalidated when the block exits (also when it
raises). Keep the block as tight as the statement: anything else that writes
the same table inside it is taken for the caller's statement.

A plugin that runs a transaction of its own, in which nothing but its own
writes happens, can have it cost one store call::

    with capture.batch(alias):      # opens the transaction (atomic)
        with capture.writing(alias, table, "insert") as statement:
            ...
            statement.settle(rows)   # sent with the block's other tags, after COMMIT
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connections

from . import _capture
from ._capture import Writing, batch, writing

__all__ = ["Item", "Writing", "active", "batch", "family", "settle", "writing"]

#: ``(table, model, old row or None, new row or None)``; a row maps attnames
#: to Python values; a missing attname means "unknown" (coarser tags)
Item = tuple[str, Any, dict | None, dict | None]


def active(alias: str = "default") -> bool:
    """Is the fields strategy live, and may a statement on ``alias`` be
    settled (not with autocommit off outside ``atomic()``, where there is no
    ``on_commit`` to settle again after the commit)?"""
    return _capture._active() is not None and not _capture._manual_transaction(
        connections[alias]
    )


def settle(alias: str, items: Iterable[Item]) -> None:
    """Invalidate the field tags of ``items`` written on ``alias`` (now, and
    inside ``atomic()`` again right after the commit)."""
    _capture.settle(alias, list(items))


def family(alias: str, table: str) -> None:
    """Invalidate every field-scoped query on ``table``."""
    _capture.family(alias, table)
