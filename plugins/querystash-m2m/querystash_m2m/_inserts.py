"""Inserts of through rows: ``bulk_create`` knows every row it writes.

``add()`` and ``set()``'s additions insert through rows with
``bulk_create``, from both sides and in both directions of a symmetrical
relation. The rows are the objects passed in: their foreign keys are exact,
so querystash-fields invalidates only the queries about those objects. A row
skipped by ``ignore_conflicts`` was already there: invalidating it too only
costs a miss. ``update_conflicts`` (an upsert: old values unknown) is left
to the family. ``save()`` of a custom through row is querystash-fields' own.
"""

from __future__ import annotations

from django.db import router

from . import _rows, _state


def make_bulk_create(original):
    def bulk_create(self, objs, *args, **kwargs):
        model = self.model
        upsert = kwargs.get("update_conflicts", args[2] if len(args) > 2 else False)
        if not _state.is_through(model) or upsert:
            return original(self, objs, *args, **kwargs)
        alias = self._db or router.db_for_write(model, **self._hints)
        if not _state.precise(alias):
            return original(self, objs, *args, **kwargs)
        objs = list(objs)
        table = model._meta.db_table
        with _state.capture.writing(alias, table, "insert") as statement:
            result = original(self, objs, *args, **kwargs)
            if len(objs) <= _state.max_rows():  # else the block's exit: the family
                statement.settle([(table, model, None, _rows.inserted(model, o))
                                  for o in objs])
        return result

    bulk_create.__querystash_original__ = original
    return bulk_create
