"""Through rows as querystash-fields wants them: ``{attname: python value}``.

A column left out of a row is *unknown*: the fields plugin then invalidates
the table's family for every scheme that uses it (coarser, never wrong).
"""

from __future__ import annotations

from django.db.models import Model


def inserted(model, obj: Model) -> dict:
    """The row ``bulk_create`` wrote for ``obj``: the values Django sent,
    and the primary key only when the database returned it."""
    row = {}
    for field in model._meta.local_concrete_fields:
        if field.attname not in obj.__dict__:
            continue  # deferred or generated: unknown
        value = obj.__dict__[field.attname]
        if value is None and (field.primary_key or field.db_returning):
            continue  # made by the database and not returned (ignore_conflicts...)
        row[field.attname] = value
    return row


def converters(connection, fields):
    """Per field, the converters Django applies to a value read from the
    database, so a RETURNING value reads as the ORM would read it."""
    out = []
    for field in fields:
        col = field.get_col(field.model._meta.db_table)
        out.append((col, connection.ops.get_db_converters(col) + col.get_db_converters(connection)))
    return out


def returned(connection, fields, rows) -> list[dict]:
    """``DELETE ... RETURNING`` rows (raw database values) as attname dicts."""
    convs = converters(connection, fields)
    out = []
    for raw in rows:
        row = {}
        for field, (col, functions), value in zip(fields, convs, raw, strict=True):
            try:
                for function in functions:
                    value = function(value, col, connection)
            except Exception:
                continue  # can't read it as the ORM would: unknown
            row[field.attname] = value
        out.append(row)
    return out
