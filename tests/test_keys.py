"""Cache keys: an injective encoding of the query, never repr() (issue 14).

The database tests run on both SQLite and PostgreSQL; the controls plant the
old repr()-based key (or a repr fallback in the encoder) and show the same
reads then get another query's rows, so the checks here can fail.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import ipaddress
import json
import logging
import uuid
from contextlib import contextmanager
from hashlib import blake2b
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, connections
from django.test import override_settings
from django.utils.safestring import SafeString, mark_safe
from hypothesis import HealthCheck, find, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import querystash
from querystash import _encode, _runtime, plugins
from tests.testapp.models import Author, Blob, Doc

pytestmark = pytest.mark.django_db(transaction=True)

PG = connection.vendor == "postgresql"
LONG = "x" * 40  # past the 35 characters psycopg's wrappers keep in their repr


# -- helpers -------------------------------------------------------------------


@pytest.fixture(params=["installed", "core-only"])
def plugin_set(request):
    """Run a database test with every installed plugin, then with the core
    alone: querystash-fields' value-scoped tags can hide a key collision (two
    reads, two tags), and the key must be right without them."""
    if request.param == "installed":
        yield request.param
        return
    with override_settings(QUERYSTASH={**settings.QUERYSTASH,
                                       "DISABLED_PLUGINS": ["fields", "m2m"]}):
        yield request.param


@pytest.fixture
def core_only():
    with override_settings(QUERYSTASH={**settings.QUERYSTASH,
                                       "DISABLED_PLUGINS": ["fields", "m2m"]}):
        yield


def repr_key(info) -> str:
    """The key function querystash had before issue 14 (the planted bug)."""
    db = connections[info.alias].settings_dict
    text = repr((db["ENGINE"], str(db["NAME"]), db.get("HOST"), db.get("PORT"),
                 info.alias, info.shape, info.sql, info.params))
    return "repr:" + blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()


class KeyPlugin:
    """A plugin whose key function is ``key`` (hashable, unlike a SimpleNamespace:
    pluggy's subset caller, used while plugins are disabled, hashes plugins)."""

    def __init__(self, key):
        self.key = key

    @querystash.hookimpl
    def querystash_key_function(self, config):
        return self.key


@contextmanager
def repr_keys():
    """Run the block with the old repr()-based key function installed."""
    plugins.register(KeyPlugin(repr_key), name="repr-keys")
    try:
        yield
    finally:
        plugins.unregister("repr-keys")


def params_of(queryset) -> tuple:
    return tuple(queryset.query.get_compiler(queryset.db).as_sql()[1])


def pks(queryset) -> list[int]:
    return list(queryset.order_by("pk").values_list("pk", flat=True))


def key_of(params: tuple) -> str:
    info = querystash.QueryInfo("SELECT %s", params, "default", "multi", "fetch", frozenset())
    return _runtime.current.key_function(info)


# -- JSON: psycopg's Jsonb abbreviates its repr -------------------------------


@pytest.fixture
def docs():
    return [Doc.objects.create(data={"k": LONG + c}) for c in "12"]


JSON_READS = {
    "exact": lambda v: Doc.objects.filter(data={"k": v}),
    "key": lambda v: Doc.objects.filter(data__k=v),
    "contains": lambda v: Doc.objects.filter(data__contains={"k": v}),
}


@pytest.mark.parametrize("lookup", sorted(JSON_READS))
def test_json_values_that_differ_past_the_repr_get_their_own_rows(
        lookup, docs, counts, django_assert_num_queries, plugin_set):
    if lookup == "contains" and not PG:
        pytest.skip("SQLite has no JSON contains lookup")
    read = JSON_READS[lookup]
    one, two = docs
    assert pks(read(LONG + "1")) == [one.pk]
    assert pks(read(LONG + "2")) == [two.pk]
    with django_assert_num_queries(0):  # equal values share a key
        assert pks(read(LONG + "1")) == [one.pk]
    assert counts("testapp.Doc")["hits"] == 1


def test_json_params_are_what_each_database_gets():
    # What the encoder keys: psycopg's Jsonb (made with the field's dumps) on
    # PostgreSQL, the JSON text on SQLite.
    params = params_of(Doc.objects.filter(data={"k": "v"}))
    if PG:
        from psycopg.types.json import Jsonb

        assert [type(p) for p in params] == [Jsonb] and params[0].dumps is not None
    else:
        assert params == ('{"k": "v"}',)


@pytest.mark.skipif(not PG, reason="on SQLite the JSON goes as text, whose repr is exact")
def test_control_repr_keys_serve_one_json_read_the_other_ones_rows(docs, core_only):
    one, _ = docs
    with repr_keys():
        assert pks(Doc.objects.filter(data={"k": LONG + "1"})) == [one.pk]
        # the planted bug: the second read is served the first one's rows
        assert pks(Doc.objects.filter(data={"k": LONG + "2"})) == [one.pk]


def test_a_json_fields_own_encoder_decides_the_key():
    from psycopg.types.json import Jsonb

    class Upper(DjangoJSONEncoder):
        def encode(self, o):
            return super().encode(o).upper()

    # Two objects one dumps() sends alike share a key; the default dumps tells them apart.
    upper = lambda o: json.dumps(o, cls=Upper)  # noqa: E731
    assert _encode.encode(Jsonb({"k": "a"}, upper)) == _encode.encode(Jsonb({"k": "A"}, upper))
    assert _encode.encode(Jsonb({"k": "a"}, json.dumps)) != _encode.encode(
        Jsonb({"k": "A"}, json.dumps))
    # A value the encoder's dumps() refuses makes the query uncacheable.
    with pytest.raises(querystash.UnencodableValue):
        _encode.encode(Jsonb({"k": object()}, json.dumps))


# -- binary: memoryview prints its address, psycopg's Binary abbreviates ------


@pytest.fixture
def blobs():
    return [Blob.objects.create(data=b"\x00" * 50 + c) for c in (b"1", b"2")]


def test_binary_values_get_their_own_rows_and_equal_content_hits(
        blobs, counts, django_assert_num_queries, plugin_set):
    one, two = blobs
    params = params_of(Blob.objects.filter(data=b"abc"))
    assert type(params[0]).__name__ == ("Binary" if PG else "memoryview")
    for _ in range(2):
        assert pks(Blob.objects.filter(data=b"\x00" * 50 + b"1")) == [one.pk]
        assert pks(Blob.objects.filter(data=bytearray(b"\x00" * 50 + b"2"))) == [two.pk]
    with django_assert_num_queries(0):  # a fresh memoryview of the same bytes hits
        assert pks(Blob.objects.filter(data=memoryview(b"\x00" * 50 + b"1"))) == [one.pk]
    assert counts("testapp.Blob")["hits"] == 3


def test_memoryview_keys_follow_the_content_not_the_object():
    a, b = bytearray(b"same"), bytearray(b"same")
    views = [memoryview(a), memoryview(b), memoryview(b"other")]  # all alive at once
    assert key_of((views[0],)) == key_of((views[1],)) == key_of((b"same",))
    assert key_of((views[0],)) != key_of((views[2],))
    a[0:1] = b"S"  # same object, new content: a new key
    assert key_of((views[0],)) != key_of((views[1],))


@pytest.mark.skipif(not PG, reason="SQLite gets a memoryview, whose repr varies by address")
def test_control_repr_keys_serve_one_binary_read_the_other_ones_rows(blobs, core_only):
    one, _ = blobs
    with repr_keys():
        assert pks(Blob.objects.filter(data=b"\x00" * 50 + b"1")) == [one.pk]
        assert pks(Blob.objects.filter(data=b"\x00" * 50 + b"2")) == [one.pk]


# -- other field types, on the database in use ---------------------------------

UTC = datetime.UTC
FIELD_VALUES = {
    "ip": ("10.0.0.1", "10.0.0.2"),
    "uid": (uuid.UUID(int=1), uuid.UUID(int=2)),
    "span": (datetime.timedelta(seconds=1), datetime.timedelta(seconds=1, microseconds=1)),
    "at": (datetime.datetime(2024, 1, 1, tzinfo=UTC),
           datetime.datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),
    "ratio": (0.1, 0.1 + 2 ** -55),  # two ulps apart
}


@pytest.mark.parametrize("field", sorted(FIELD_VALUES))
def test_field_values_get_their_own_rows_and_repeats_hit(
        field, counts, django_assert_num_queries, plugin_set):
    v1, v2 = FIELD_VALUES[field]
    one = Doc.objects.create(**{field: v1})
    two = Doc.objects.create(**{field: v2})
    assert pks(Doc.objects.filter(**{field: v1})) == [one.pk]
    assert pks(Doc.objects.filter(**{field: v2})) == [two.pk]
    with django_assert_num_queries(0):
        assert pks(Doc.objects.filter(**{field: v1})) == [one.pk]
    assert counts("testapp.Doc").get("vetoed", 0) == 0


def test_integer_field_params_hit():
    # On PostgreSQL Django wraps integer fields' values in psycopg's Int4/Int8:
    # they have handlers of their own, so they are cached like ints.
    Author.objects.create(name="Ann", age=40)
    params = params_of(Author.objects.filter(age=40))
    if PG:
        assert type(params[0]).__name__ == "Int4"
    rt = _runtime.current
    list(Author.objects.filter(age=40))
    list(Author.objects.filter(age=40))
    assert rt.stats.by_model["testapp.Author"]["hits"] == 1


# -- a parameter type the encoder does not know: not cached -------------------


class Opaque(str):
    """A str subclass (databases send it as text) whose repr says nothing."""

    def __repr__(self) -> str:
        return "Opaque(...)"


def test_unknown_parameter_type_is_read_uncached_and_counted_vetoed(
        counts, caplog, django_assert_num_queries, plugin_set):
    ann = Author.objects.create(name="Ann")
    bob = Author.objects.create(name="Bob")
    assert type(params_of(Author.objects.filter(name=Opaque("Ann")))[0]) is Opaque
    caplog.set_level(logging.DEBUG, logger="querystash")
    for name, author in [("Ann", ann), ("Bob", bob), ("Ann", ann)]:
        with django_assert_num_queries(1):
            assert pks(Author.objects.filter(name=Opaque(name))) == [author.pk]
    c = counts("testapp.Author")
    assert c["vetoed"] == 3
    assert not c.get("hits") and not c.get("misses") and not c.get("fills")
    assert "unencodable parameter of type tests.test_keys.Opaque" in caplog.text
    with pytest.raises(querystash.Uncacheable) as raised:
        key_of((1, [Opaque("Ann")]))
    assert raised.value.reason == "unencodable parameter of type tests.test_keys.Opaque"


def test_control_a_repr_fallback_would_serve_the_wrong_rows(monkeypatch, core_only):
    ann = Author.objects.create(name="Ann")
    Author.objects.create(name="Bob")
    monkeypatch.setitem(_encode._HANDLERS, Opaque, lambda v, out: out.append(repr(v)))
    assert pks(Author.objects.filter(name=Opaque("Ann"))) == [ann.pk]
    assert pks(Author.objects.filter(name=Opaque("Bob"))) == [ann.pk]  # Bob gets Ann's rows


def test_a_key_function_raising_uncacheable_vetoes_the_read(counts, django_assert_num_queries):
    ann = Author.objects.create(name="Ann")

    def key(info):
        raise querystash.Uncacheable("not today")

    plugins.register(KeyPlugin(key), name="veto")
    try:
        for _ in range(2):
            with django_assert_num_queries(1):
                assert pks(Author.objects.all()) == [ann.pk]
    finally:
        plugins.unregister("veto")
    assert counts("testapp.Author")["vetoed"] == 2


# -- the encoder on its own ----------------------------------------------------


class Colour(enum.Enum):
    RED = 1
    BLUE = "1"


class Level(enum.IntEnum):
    LOW = 1


class Size(enum.StrEnum):
    S = "s"


def test_values_that_look_alike_encode_apart():
    from psycopg.types.json import Json, Jsonb
    from psycopg.types.numeric import Int4, Int8
    from psycopg.types.range import Range

    naive = datetime.datetime(2024, 1, 1, 12)
    groups = [
        [None, False, 0, 0.0, -0.0, decimal.Decimal(0), "", b"", (), [], {}, Int4(0), Int8(0)],
        [True, 1, 1.0, decimal.Decimal("1.0"), decimal.Decimal("1.00"), "1", Colour.RED,
         Colour.BLUE, Level.LOW, Int4(1)],
        [float("inf"), float("-inf"), float("nan"), decimal.Decimal("NaN"),
         decimal.Decimal("sNaN"), decimal.Decimal("Infinity")],
        [naive, naive.replace(tzinfo=UTC), naive.replace(tzinfo=ZoneInfo("Europe/Paris")),
         naive.replace(fold=1), naive.date(), naive.time(), naive.time().replace(tzinfo=UTC)],
        [Json({"a": 1}, json.dumps), Jsonb({"a": 1}, json.dumps), Jsonb({"a": 1}),
         Jsonb('{"a": 1}', json.dumps), '{"a": 1}', {"a": 1}],
        [Range(empty=True), Range(None, None), Range(1, 2, "[)"), Range(1, 2, "[]"),
         Range(1, 2, "(]"), (1, 2), [1, 2]],
        [("a", "b"), ("ab",), ["a", "b"], ("a", ("b",)), {"a": "b"}, {"b": "a"},
         Size.S, "s"],
        [ipaddress.ip_address("::1"), ipaddress.ip_network("::1/128"),
         ipaddress.ip_interface("::1/128"), "::1"],
        [uuid.UUID(int=1), uuid.UUID(int=1).hex, datetime.timedelta(1), datetime.timedelta(0, 1)],
    ]
    for group in groups:
        codes = [_encode.encode(v) for v in group]
        assert len(set(codes)) == len(codes), group
    # parameter tuples, through the key function's fast paths
    tuples = [(1, 1, 1), (True, 1, 1), (1, 1, True), (Int4(1),) * 3, (Int8(1),) * 3,
              (Int4(1), Int8(1), 1), ("1", "1", "1"), (1.0, 1, 1)]
    keys = {key_of(t) for t in tuples}
    assert len(keys) == len(tuples)


def test_equal_values_of_known_types_encode_alike():
    assert _encode.encode(mark_safe("a")) == _encode.encode("a")
    assert _encode.encode(b"ab") == _encode.encode(bytearray(b"ab")) == _encode.encode(
        memoryview(b"ab"))
    assert _encode.encode(float("nan")) == _encode.encode(-float("nan"))
    assert _encode.encode(10 ** 5000) != _encode.encode(10 ** 5000 + 1)  # no str() limit


def test_subclasses_of_known_types_are_unknown():
    class MyInt(int):
        pass

    for value in (MyInt(1), [1, MyInt(1)], {"k": Opaque("x")}, object(), {1, 2}):
        with pytest.raises(querystash.UnencodableValue):
            _encode.encode(value)


def test_a_value_that_fails_while_encoded_is_unencodable():
    class Broken(datetime.tzinfo):
        def utcoffset(self, dt):
            raise RuntimeError("no offset")

    view = memoryview(b"x")
    view.release()
    for value in (datetime.datetime(2024, 1, 1, tzinfo=Broken()), view):
        with pytest.raises(querystash.UnencodableValue, match="unencodable parameter"):
            _encode.encode(value)


# -- property: distinct values never encode alike, equal values always do ------

ZONES = [UTC, datetime.timezone(datetime.timedelta(hours=-5), "EST"),
         datetime.timezone(datetime.timedelta(hours=1)), ZoneInfo("Europe/Paris"),
         ZoneInfo("America/New_York")]
# delimiters and digits of the encoding itself, a lone surrogate, non-ASCII
TRICKY = st.text(st.sampled_from(list("s1:;[{ab\x00\ud800é") + ["\U0001f600"]), max_size=5)
JSONABLE = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY,
    lambda c: st.lists(c, max_size=2) | st.dictionaries(TRICKY, c, max_size=2), max_leaves=4)


def _scalars():
    from psycopg import Binary
    from psycopg.types.json import Json, Jsonb
    from psycopg.types.numeric import Float4, Int2, Int4, Int8
    from psycopg.types.range import Range

    small = st.integers(-3, 3)
    ints = small | st.integers() | st.integers(-(10 ** 40), 10 ** 40)
    binary = st.binary(max_size=4)
    return st.one_of(
        st.none(), st.booleans(), ints, st.floats(allow_nan=True), st.sampled_from([0.0, -0.0]),
        st.decimals(allow_nan=True, allow_infinity=True, places=None),
        st.sampled_from([decimal.Decimal(s) for s in ("1", "1.0", "1.00", "1E+1", "10", "-0")]),
        TRICKY, TRICKY.map(SafeString), st.text(max_size=4),
        binary, binary.map(bytearray), binary.map(memoryview), binary.map(Binary),
        st.dates(), st.times(timezones=st.none() | st.sampled_from(ZONES[:3])),
        st.datetimes(timezones=st.none() | st.sampled_from(ZONES)),
        st.timedeltas(), st.uuids(), st.ip_addresses(),
        st.sampled_from([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_interface("10.0.0.1/8"),
                         ipaddress.ip_network("::/0"), ipaddress.ip_interface("::1/64")]),
        st.sampled_from([Colour.RED, Colour.BLUE, Level.LOW, Size.S]),
        small.map(Int2), small.map(Int4), small.map(Int8), st.floats(-2, 2).map(Float4),
        JSONABLE.map(lambda o: Jsonb(o, json.dumps)), JSONABLE.map(lambda o: Json(o, json.dumps)),
        JSONABLE.map(Jsonb),
        st.sampled_from([Range(empty=True), Range(None, None), Range(1, None, "[]")]),
        st.builds(Range, small, small, st.sampled_from(["[)", "(]", "()", "[]"])),
    )


def canon(v):
    """Type-strict, exact identity of a value: what the encoder must tell apart."""
    t = type(v)
    if t in (list, tuple):
        return (t.__name__, tuple(canon(x) for x in v))
    if t is dict:
        return ("dict", tuple((canon(k), canon(x)) for k, x in v.items()))
    if t in (bytes, bytearray, memoryview):
        return ("bytes", bytes(v))
    if t is SafeString:
        return ("str", str(v))
    if t.__name__ in ("float", "Float4"):
        return (t.__name__, v.hex())  # every NaN alike, -0.0 apart
    if t is decimal.Decimal:
        return ("decimal", v.as_tuple())
    if t in (datetime.datetime, datetime.time):
        fields = v.replace(tzinfo=None).isoformat()
        aware = v.tzinfo is not None
        offset = (v.utcoffset(), v.tzname()) if aware else None
        return (t.__name__, fields, v.fold, aware, offset)
    if isinstance(v, enum.Enum):
        return ("enum", t.__qualname__, v.name, canon(v.value))
    if t.__name__ in ("Json", "Jsonb"):
        return (t.__name__, v.dumps(v.obj) if v.dumps else canon(v.obj))
    if t.__name__ == "Binary":
        return ("Binary", canon(v.obj))
    if t.__name__ == "Range":
        return ("Range", v.bounds, canon(v.lower), canon(v.upper))
    if t.__module__ == "ipaddress":
        return (t.__name__, str(v))
    return (t.__name__, v)  # None, bool, int, Int2/4/8, str, date, timedelta, UUID


def values():
    return st.recursive(
        _scalars(),
        lambda c: st.lists(c, max_size=3) | st.lists(c, max_size=3).map(tuple)
        | st.dictionaries(TRICKY, c, max_size=2),
        max_leaves=6)


def injective_on(xs, enc) -> bool:
    """canon(a) == canon(b) exactly when enc(a) == enc(b), for all a, b in xs."""
    by_code: dict[bytes, object] = {}
    by_canon: dict[object, bytes] = {}
    for x in xs:
        code, c = enc(x), canon(x)
        if by_code.setdefault(code, c) != c or by_canon.setdefault(c, code) != code:
            return False
    return True


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(values(), min_size=2, max_size=6))
def test_property_distinct_values_never_encode_alike_and_equal_ones_do(xs):
    assert injective_on(xs, _encode.encode)
    assert injective_on(xs, lambda x: _encode.encode(x))  # deterministic across calls
    # the same values as a parameter tuple, as the key function encodes them
    out: list[str] = []
    _encode.encode_params_into(tuple(xs), out)
    assert "".join(out).encode("utf-8", "surrogatepass") == _encode.encode(tuple(xs))


def test_control_the_property_finds_a_collision_in_a_broken_encoding(monkeypatch):
    # Plant the bug: strings without their length prefix.
    monkeypatch.setitem(_encode._HANDLERS, str, lambda v, out: out.append("s" + v))
    strings = st.lists(st.text("as", max_size=3), max_size=3).map(tuple)
    found = find(st.lists(strings, min_size=2, max_size=2),
                 lambda xs: not injective_on(xs, _encode.encode),
                 settings=hsettings(max_examples=2000, database=None, derandomize=True))
    assert canon(found[0]) != canon(found[1])
    assert _encode.encode(found[0]) == _encode.encode(found[1])


@hsettings(max_examples=200, deadline=None)
@given(st.sampled_from(["int", "Int2", "Int4", "Int8"]),
       st.lists(st.integers(-(2 ** 70), 2 ** 70), min_size=1, max_size=25))
def test_property_the_one_format_path_for_int_lists_writes_the_loops_codes(kind, ints):
    from psycopg.types import numeric

    cls = int if kind == "int" else getattr(numeric, kind)
    params = tuple(map(cls, ints))
    out: list[str] = []
    _encode.encode_params_into(params, out)
    one_by_one: list[str] = [f"t{len(params)}["]
    for p in params:
        _encode.encode_into(p, one_by_one)
    assert "".join(out) == "".join(one_by_one)
    # a bool among them is not an int (it takes the loop, and its own tag)
    if params[0] == 1:
        mixed: list[str] = []
        _encode.encode_params_into((True, *params[1:]), mixed)
        assert mixed != out


@pytest.mark.skipif(PG, reason="the benchmark picks its own database; once per suite run")
def test_bench_keys_runs_and_compares_both_key_functions(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QUERYSTASH_", "BENCH_", "DJANGO_SETTINGS"))}
    env["BENCH_SQLITE_PATH"] = str(tmp_path / "keys.sqlite3")
    proc = subprocess.run([sys.executable, "-m", "bench.keys", "--rounds", "1", "--inner", "2"],
                          cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][2:]
    assert [row.split(" | ")[1] for row in rows] == ["repr (old)", "encoder (new)"] * 3
    assert "timed reads, all hits" in proc.stdout
