"""The canonical, type-tagged, injective encoding of query parameters.

A cache key is an encoding, not a description: two parameter values the
database could tell apart must never encode alike, or the second read is
served the first one's rows. ``repr()`` is not such an encoding (psycopg's
``Jsonb`` and ``Binary`` abbreviate theirs, a ``memoryview`` prints its
address), so every value goes through a handler chosen by its **exact** type.
A type without a handler raises :class:`UnencodableValue`: the query is not
cached, never keyed by a guess.

Every handler writes a self-delimiting code (a one-letter type tag, then a
length prefix or a terminator that cannot occur in the body), so a sequence of
codes is itself uniquely decodable; the whole text is encoded once, as UTF-8
with ``surrogatepass``, which is injective on every Python ``str``.
Over-distinguishing is allowed (``Decimal("1.0")`` and ``Decimal("1.00")``, or
one instant in two time zones, get two keys: only fewer hits); values the
database receives identically may share a code (``bytes`` and a
``memoryview`` of the same content).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import ipaddress
import uuid
from collections.abc import Callable
from typing import Any

from django.utils.safestring import SafeString

from .exceptions import Uncacheable


class UnencodableValue(Uncacheable):
    """A value of a type the key encoder has no exact encoding for."""

    def __init__(self, value: Any, error: BaseException | None = None):
        self.type = t = type(value)
        reason = f"unencodable parameter of type {t.__module__}.{t.__qualname__}"
        if error is not None:
            reason += f" ({type(error).__name__}: {error})"
        super().__init__(reason)


def failed(value: Any, error: Exception) -> UnencodableValue:
    """What to raise when encoding ``value`` failed with ``error``."""
    if isinstance(error, UnencodableValue):
        return error
    return UnencodableValue(value, error)


Out = list[str]


def encode(value: Any) -> bytes:
    """The canonical bytes of ``value``; :class:`UnencodableValue` for a type
    (at any depth) without an exact encoding, or a value whose own methods
    fail while it is encoded (a tzinfo that raises, a released memoryview)."""
    out: Out = []
    try:
        encode_into(value, out)
    except Exception as exc:
        raise failed(value, exc) from exc
    return "".join(out).encode("utf-8", "surrogatepass")


def encode_into(value: Any, out: Out) -> None:
    """Append the code of ``value`` to ``out`` (join, then encode as UTF-8
    with ``surrogatepass``)."""
    handler = _HANDLERS.get(type(value))
    if handler is None:
        handler = _fallback(value)
    handler(value, out)


def encode_params_into(params: tuple | list, out: Out) -> None:
    """Append the code of a parameter tuple: the same as ``encode_into`` of
    the tuple, with the common exact ``str`` / ``int`` members inlined."""
    n = len(params)
    append = out.append
    append(f"t{n}[")
    if n > 2:
        # Many ints of one exact type (an IN list): one %-format in C writes
        # the same codes the loop would.
        types = set(map(type, params))
        if len(types) == 1 and (tag := _INT_TAGS.get(types.pop())) is not None:
            append(f"{tag}%x;" * n % tuple(params))
            return
    for value in params:
        t = type(value)
        if t is int:
            append(f"i{value:x};")
        elif t is str:
            append(f"s{len(value)}:{value}")
        else:
            encode_into(value, out)


# -- handlers, by exact type ---------------------------------------------------
# Each one appends codes starting with its own tag letter; a body either has a
# length prefix ("s3:abc") or ends with a character it cannot contain (";").


def _none(value, out: Out) -> None:
    out.append("N")


def _bool(value, out: Out) -> None:
    out.append("T" if value else "F")


def _int(value, out: Out) -> None:
    # Hexadecimal: decimal str() refuses ints over sys.int_max_str_digits.
    out.append(f"i{value:x};")


def _float(value, out: Out) -> None:
    # float.hex() is exact: -0.0 and 0.0 differ, inf is "inf", every NaN "nan".
    out.append(f"f{value.hex()};")


def _decimal(value, out: Out) -> None:
    # str() of a Decimal keeps sign, every digit and the exponent (and NaN
    # payloads); it never contains ";".
    out.append(f"D{value};")


def _str(value, out: Out) -> None:
    out.append(f"s{len(value)}:")
    out.append(value)


def _safe_str(value, out: Out) -> None:
    # Django's SafeString is sent as its text: encode it as that str.
    _str(str.__str__(value), out)


def _bytes(value, out: Out) -> None:
    # bytes, bytearray and memoryview: the database receives the content. One
    # tag for all three (they compare equal); latin-1 maps bytes 1:1 to code points.
    if type(value) is memoryview:
        value = value.tobytes()
    out.append(f"b{len(value)}:")
    out.append(value.decode("latin-1"))


def _offset_and_name(value, out: Out) -> None:
    # What an aware value sends is its wall-clock fields plus its UTC offset;
    # the zone's name only over-distinguishes (one instant, two zones: two keys).
    encode_into(value.utcoffset(), out)
    name = value.tzname()
    encode_into(name if type(name) is str else None, out)


def _date(value, out: Out) -> None:
    out.append(f"d{value.toordinal():x};")


def _datetime(value, out: Out) -> None:
    naive = value.replace(tzinfo=None)
    if value.tzinfo is None:
        out.append(f"w{naive.isoformat()}/{value.fold};")
    else:
        out.append(f"W{naive.isoformat()}/{value.fold};")
        _offset_and_name(value, out)


def _time(value, out: Out) -> None:
    naive = value.replace(tzinfo=None)
    if value.tzinfo is None:
        out.append(f"h{naive.isoformat()}/{value.fold};")
    else:
        out.append(f"H{naive.isoformat()}/{value.fold};")
        _offset_and_name(value, out)


def _timedelta(value, out: Out) -> None:
    out.append(f"e{value.days:x},{value.seconds:x},{value.microseconds:x};")


def _uuid(value, out: Out) -> None:
    out.append(f"u{value.hex};")


def _sequence(tag: str) -> Callable[[Any, Out], None]:
    """The handler of a sequence type: its tag and length, then each item."""

    def handler(value, out: Out) -> None:
        out.append(f"{tag}{len(value)}[")
        for item in value:
            encode_into(item, out)

    return handler


_list = _sequence("l")
_tuple = _sequence("t")


def _dict(value, out: Out) -> None:
    # Insertion order is kept: an adapter that serialises a dict (to JSON, say)
    # sends its keys in that order, so two orders may be two different values.
    out.append(f"m{len(value)}{{")
    for key, item in value.items():
        encode_into(key, out)
        encode_into(item, out)


def _ip(tag: str) -> Callable[[Any, Out], None]:
    def handler(value, out: Out) -> None:
        # str() of an ipaddress object is its canonical (compressed) form,
        # prefix length and IPv6 scope id included.
        text = str(value)
        out.append(f"{tag}{len(text)}:")
        out.append(text)

    return handler


def _enum(value: enum.Enum, out: Out) -> None:
    # The class (module + qualified name), the member's name and value, and,
    # for a member that is also a str/int/float/bytes, the builtin content an
    # adapter may send instead of the name or value.
    cls = type(value)
    out.append("E")
    _str(cls.__module__, out)
    _str(cls.__qualname__, out)
    encode_into(value.name, out)  # None for some composite Flag values
    encode_into(value.value, out)
    for base, content in _ENUM_CONTENT:
        if isinstance(value, base):
            encode_into(content(value), out)
            break
    else:
        out.append("N")


_ENUM_CONTENT: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (int, int.__int__),
    (float, float.__float__),
    (str, str.__str__),
    (bytes, bytes),
)


def _fallback(value) -> Callable[[Any, Out], None]:
    """The handler for a type missing from ``_HANDLERS``: enum members (by
    class, name and value); anything else is unencodable."""
    if isinstance(value, enum.Enum):
        return _enum
    raise UnencodableValue(value)


_HANDLERS: dict[type, Callable[[Any, Out], None]] = {
    type(None): _none,
    bool: _bool,
    int: _int,
    float: _float,
    decimal.Decimal: _decimal,
    str: _str,
    SafeString: _safe_str,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    datetime.date: _date,
    datetime.datetime: _datetime,
    datetime.time: _time,
    datetime.timedelta: _timedelta,
    uuid.UUID: _uuid,
    list: _list,
    tuple: _tuple,
    dict: _dict,
    ipaddress.IPv4Address: _ip("a"),
    ipaddress.IPv6Address: _ip("A"),
    ipaddress.IPv4Interface: _ip("c"),
    ipaddress.IPv6Interface: _ip("C"),
    ipaddress.IPv4Network: _ip("n"),
    ipaddress.IPv6Network: _ip("Q"),
}


# -- psycopg 3 wrappers ----------------------------------------------------------


def _json_wrapper(tag: str) -> Callable[[Any, Out], None]:
    def handler(value, out: Out) -> None:
        out.append(tag)
        if value.dumps is None:
            # The connection's own dumps() will serialise it: key the object
            # itself, exactly (Django always passes its dumps; others may not).
            out.append("o")
            encode_into(value.obj, out)
            return
        # The exact text the dumper sends, made by the wrapper's own dumps()
        # (so a JSONField's custom encoder is honoured).
        try:
            text = value.dumps(value.obj)
        except Exception as exc:
            raise UnencodableValue(value, exc) from exc
        if type(text) is str:
            _str(text, out)
        elif isinstance(text, (bytes, bytearray, memoryview)):
            _bytes(bytes(text), out)
        else:
            raise UnencodableValue(value)

    return handler


def _binary(value, out: Out) -> None:
    out.append("Y")
    encode_into(value.obj, out)


def _range(value, out: Out) -> None:
    # bounds is "" for an empty range, else one of "[)", "(]", "()", "[]".
    out.append(f"r{value.bounds};")
    encode_into(value.lower, out)
    encode_into(value.upper, out)


_multirange = _sequence("R")


def _int_as(tag: str) -> Callable[[Any, Out], None]:
    def handler(value, out: Out) -> None:
        out.append(f"{tag}{int.__index__(value):x};")

    return handler


def _float_as(tag: str) -> Callable[[Any, Out], None]:
    def handler(value, out: Out) -> None:
        out.append(f"{tag}{float.hex(value)};")

    return handler


#: exact int types and their tag, for encode_params_into's one-format path
_INT_TAGS: dict[type, str] = {int: "i"}


def _register_psycopg() -> None:
    try:
        from psycopg import Binary
        from psycopg.types.json import Json, Jsonb
        from psycopg.types.multirange import Multirange
        from psycopg.types.numeric import Float4, Float8, Int2, Int4, Int8, IntNumeric, Oid
        from psycopg.types.range import Range
    except ImportError:  # SQLite-only sites: these types never reach a query
        return
    _INT_TAGS.update({Int2: "2", Int4: "4", Int8: "8", IntNumeric: "9", Oid: "O"})
    _HANDLERS.update({
        # int / float subclasses that pick the PostgreSQL type sent (Django
        # wraps every integer field's value in Int2/Int4/Int8): one tag each.
        **{t: _int_as(tag) for t, tag in _INT_TAGS.items() if t is not int},
        Float4: _float_as("g"),
        Float8: _float_as("G"),
        Json: _json_wrapper("J"),
        Jsonb: _json_wrapper("K"),
        Binary: _binary,
        Range: _range,
        Multirange: _multirange,
    })


_register_psycopg()
