"""Field values -> stable tag text, the same in every process.

A value is rendered from what the database compares: the field's prepared
value (``get_prep_value``; a foreign key delegates to its target field), so a
filter on ``author=alice`` and a save with ``author_id=5`` render alike.
Only types whose database equality is Python equality are rendered; any
other field is never used in a condition (its table falls back to coarser
tags).
"""

from __future__ import annotations

import datetime
import decimal
import re
import uuid
from hashlib import blake2b

from django.db import models

#: a rendered value that cannot be known (an expression, a deferred field)
UNKNOWN = None

_SAFE = re.compile(r"[A-Za-z0-9_.@+\-]{0,40}")

_TEXT = (models.CharField, models.TextField)
_SIMPLE = (
    models.IntegerField,  # Small/Big/Positive*, AutoField variants
    models.BooleanField,
    models.DateField,  # DateTimeField too
    models.TimeField,
    models.DecimalField,
    models.UUIDField,
    *_TEXT,
)


def value_field(field):
    """The field whose values a column holds: a foreign key's target field."""
    seen = 0
    while field.is_relation and getattr(field, "target_field", None) is not None and seen < 8:
        if not (field.many_to_one or field.one_to_one):
            return None
        field = field.target_field
        seen += 1
    return field


def taggable(field, vendor: str) -> bool:
    """May conditions on ``field``'s column become tags?"""
    target = value_field(field)
    if target is None or not isinstance(target, _SIMPLE):
        return False
    if isinstance(target, _TEXT):
        # Case- or accent-insensitive comparison (MySQL's defaults, a
        # db_collation) would make two renderings equal in the database.
        if vendor == "mysql" or getattr(target, "db_collation", None):
            return False
        if getattr(field, "db_collation", None):
            return False
    return True


def render(field, value) -> str | None:
    """The tag text of ``value`` in ``field``'s column, or ``UNKNOWN``."""
    if value is None:
        return "~"
    if hasattr(value, "resolve_expression"):
        return UNKNOWN
    try:
        value = field.get_prep_value(value)
    except Exception:
        return UNKNOWN
    return render_prepped(value)


def render_prepped(value) -> str | None:
    if value is None:
        return "~"
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return f"D{value}"
        text = format(value.normalize(), "f")
        return "D0" if text in ("0", "-0") else f"D{text}"
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
            return "z" + value.isoformat()
        return "t" + value.isoformat()
    if isinstance(value, datetime.date):
        return "d" + value.isoformat()
    if isinstance(value, datetime.time):
        return "h" + value.isoformat()
    if isinstance(value, uuid.UUID):
        return "u" + value.hex
    if isinstance(value, str):
        if _SAFE.fullmatch(value):
            return "s" + value
        return "x" + blake2b(value.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
    return UNKNOWN
