"""Field values -> stable tag text, the same in every process.

A value is rendered from what the database compares: the field's prepared
value (``get_prep_value``; a foreign key delegates to its target field), so a
filter on ``author=alice`` and a save with ``author_id=5`` render alike.
A written value is rendered as the database *stores* it (``stored=True``):
PostgreSQL rounds a numeric to the column's scale, so ``1.005`` written to a
``decimal_places=2`` column is tagged ``1.01``, the value reads compare with.

Only columns whose database equality is Python equality of those renderings
are used (``taggable``): Django's own integer, boolean, date/time, UUID,
decimal (PostgreSQL) and varchar/text (binary collation) fields, unchanged by
a subclass. Everything else (floats, JSON, arrays, hstore, binary, padded
CHAR, collations, custom fields, decimals on SQLite's REAL storage) is never
used in a condition: its table keeps coarser tags.
"""

from __future__ import annotations

import datetime
import decimal
import re
import uuid
from hashlib import blake2b

from django.conf import settings
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


#: what a subclass must not override for its values to render like Django's own
_CONVERSIONS = ("get_prep_value", "get_db_prep_value", "get_db_prep_save", "to_python",
                "from_db_value", "db_type", "db_parameters", "cast_db_type", "rel_db_type",
                "get_db_converters", "pre_save")


def _builtin_base(cls):
    for base in cls.__mro__:
        if base.__module__.startswith("django.db.models.fields") and base is not models.Field:
            return base
    return None


def _unchanged(target) -> bool:
    """Does ``target`` convert values exactly as the Django field it derives from?"""
    cls = type(target)
    base = _builtin_base(cls)
    if base is None:
        return False
    if cls is base:
        return True
    return all(getattr(cls, name, None) is getattr(base, name, None) for name in _CONVERSIONS
               if name != "pre_save")


def kind(field) -> str | None:
    """What a column's values are compared as, for carrying values across a
    join: ``None`` when not taggable at all."""
    target = value_field(field)
    if target is None or not isinstance(target, _SIMPLE):
        return None
    for family in (models.IntegerField, models.BooleanField, models.DateTimeField,
                   models.DateField, models.TimeField, models.DecimalField, models.UUIDField):
        if isinstance(target, family):
            return family.__name__
    return "text"


def taggable(field, vendor: str) -> bool:
    """May conditions on ``field``'s column become tags?"""
    target = value_field(field)
    if target is None or not isinstance(target, _SIMPLE) or not _unchanged(target):
        return False
    if target is not field and not _unchanged(field):
        return False
    if isinstance(target, models.DecimalField) and vendor != "postgresql":
        # SQLite stores decimals as REAL (two decimals can be one double),
        # MySQL/Oracle round their own way: not rendered.
        return False
    if vendor not in ("postgresql", "sqlite") and not isinstance(
        target, (models.IntegerField, models.BooleanField, models.UUIDField)
    ):
        return False  # Oracle's '' is NULL, MySQL's collations and rounding ...
    if isinstance(target, _TEXT):
        # Case- or accent-insensitive comparison (MySQL's defaults, a
        # db_collation) would make two renderings equal in the database.
        if vendor == "mysql" or getattr(target, "db_collation", None):
            return False
        if getattr(field, "db_collation", None):
            return False
    return True


def render(field, value, stored: bool = False) -> str | None:
    """The tag text of ``value`` in ``field``'s column, or ``UNKNOWN``;
    ``stored``: as the database stores it when written (else: as it compares
    it in a WHERE clause)."""
    if value is None:
        return "~"
    if hasattr(value, "resolve_expression"):
        return UNKNOWN
    try:
        value = field.get_prep_value(value)
    except Exception:
        return UNKNOWN
    if value is None:
        return "~"
    target = value_field(field)
    if isinstance(value, decimal.Decimal) and isinstance(target, models.DecimalField):
        if stored:
            value = _stored_decimal(target, value)
            if value is UNKNOWN:
                return UNKNOWN
    elif isinstance(value, datetime.datetime):
        if not isinstance(target, models.DateTimeField):
            return UNKNOWN  # a datetime compared with a date column: cast by the database
        if (value.tzinfo is not None) != bool(settings.USE_TZ):
            return UNKNOWN  # converted through a time zone by the database or the driver
    elif isinstance(value, datetime.time):
        if value.tzinfo is not None:
            return UNKNOWN
    elif isinstance(value, str) and "\x00" in value:
        return UNKNOWN  # refused or cut by the database
    return render_prepped(value)


def _stored_decimal(field, value: decimal.Decimal):
    """What PostgreSQL stores for ``value`` in ``numeric(max_digits,
    decimal_places)``: rounded half away from zero to the scale."""
    if not value.is_finite():
        return value
    places = field.decimal_places
    if places is None:
        return value  # unconstrained numeric: stored as given
    try:
        return value.quantize(decimal.Decimal(1).scaleb(-places),
                              rounding=decimal.ROUND_HALF_UP,
                              context=decimal.Context(prec=max(field.max_digits or 0, 1) + 2))
    except decimal.InvalidOperation:
        return UNKNOWN  # too many digits: the write fails anyway


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
