"""Every field type Django ships, with boundary values, on the test database
(SQLite or PostgreSQL): cached ``filter(<field>=value)`` reads stay equal to
the database through creates, saves (full, ``update_fields``, deferred
loads), and deletes; and no save fails or changes its UPDATE because of
querystash-fields.

Where a value's equality in the database differs from its rendering
(rounding, padded CHAR, floats, JSON, arrays, IPs ...), the plugin must fall
back to table-level tags for that column: the reads here would catch it.
"""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from querystash_fields import _values

from querystash.testing import clear_stores
from tests.fieldtypes.models import POSTGRES, Kinds, Note, Owner
from tests.helpers import update_statements

pytestmark = pytest.mark.django_db(transaction=True)

UTC = datetime.UTC
PLUS1 = datetime.timezone(datetime.timedelta(hours=1))

VALUES = {
    "big": [0, -1, 2**63 - 1, -(2**63)],
    "binary": [b"", b"\x00", b"a"],
    "boolean": [True, False],
    "char": ["", "a", "a ", "A", "é", "e\u0301"],
    "date": [datetime.date(1, 1, 1), datetime.date(2024, 2, 29), datetime.date(9999, 12, 31)],
    "datetime": [
        datetime.datetime(2024, 1, 1, 12, 0, tzinfo=UTC),
        datetime.datetime(2024, 1, 1, 13, 0, tzinfo=PLUS1),  # the same instant
        datetime.datetime(2024, 1, 1, 12, 0, 0, 999999, tzinfo=UTC),
    ],
    "decimal": [Decimal("1.005"), Decimal("1.01"), Decimal("1.015"), Decimal("-0.005"),
                Decimal("0"), Decimal("0.00"), Decimal("999.99"), Decimal("0.1")],
    "duration": [datetime.timedelta(0), datetime.timedelta(microseconds=1),
                 datetime.timedelta(days=-1)],
    "email": ["a@b.c", "A@b.c"],
    "file": ["a.txt", ""],
    "filepath": ["a", "b"],
    "floating": [0.1, 0.1 + 0.2, 0.3, 1e308, 0.0, -0.0],
    "ip": ["::1", "0:0:0:0:0:0:0:1", "127.0.0.1"],
    "integer": [0, -1, 2**31 - 1, -(2**31)],
    "json": [{"a": 1}, {"a": 1.0}, [1, 2], "s", 1],
    "pos_big": [0, 2**63 - 1],
    "pos_int": [0, 2**31 - 1],
    "pos_small": [0, 32767],
    "slug": ["a-b", "a_b"],
    "small": [-32768, 32767],
    "text": ["", "x" * 300, "ümlaut"],
    "time": [datetime.time(0, 0), datetime.time(23, 59, 59, 999999), datetime.time(12, 0)],
    "url": ["http://a.b/", "http://A.b/"],
    "uuid": [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), "00000000000000000000000000000001"],
    "padded": ["a", "a    ", "ab"],  # a custom field: CHAR(5)
}
if POSTGRES:
    PG_VALUES = {
        "array": [[1, 2], [], [2, 1]],
        "texts": [["a"], ["a", "b"], []],
        "hstore": [{"a": "1"}, {}, {"a": "1", "b": None}],
        "citext_like": ["a", "A"],  # a db_collation: never taggable
    }
else:
    PG_VALUES = {}


@pytest.fixture(autouse=True)
def cached_models(settings):
    config = settings.QUERYSTASH
    with override_settings(QUERYSTASH={
        **config, "MODELS": {**config["MODELS"], "fieldtypes.*": {"ops": "all", "timeout": 600}},
    }):
        clear_stores()
        yield


def _model(name):
    if name in PG_VALUES:
        from tests.fieldtypes.models import PgKinds

        return PgKinds
    return Kinds


def _reads(model, name, values):
    def qs(cached):
        return model.objects.all() if cached else model.objects.nocache()

    reads = []
    for value in values:
        reads.append(lambda c, v=value: sorted(qs(c).filter(**{name: v}).values_list(
            "pk", flat=True)))
        reads.append(lambda c, v=value: qs(c).filter(**{name: v}).count())
    reads.append(lambda c: sorted(qs(c).filter(pk__gt=0).values_list("pk", name)))
    return reads


def _check(reads, step):
    for i, fn in enumerate(reads):
        cached, truth = fn(True), fn(False)
        assert cached == truth, f"read {i} stale after {step}: {cached!r} != {truth!r}"
        fn(True)


def _update_statements(save):
    with CaptureQueriesContext(connection) as ctx:
        save()
    return update_statements(ctx.captured_queries)


@pytest.mark.parametrize("name", sorted({**VALUES, **PG_VALUES}))
def test_reads_stay_fresh_through_every_write(name):
    model = _model(name)
    values = {**VALUES, **PG_VALUES}[name]
    values = [*values, None] if name != "json" else values  # JSON: None is JSON null
    reads = _reads(model, name, values)
    for fn in reads:
        fn(True)
    rows = []
    for value in values:
        rows.append(model.objects.create(**{name: value}))
        _check(reads, f"create {name}={value!r}")
    for i, row in enumerate(rows):
        new = values[(i + 1) % len(values)]
        loaded = model.objects.nocache().get(pk=row.pk)
        setattr(loaded, name, new)
        updates = _update_statements(loaded.save)
        assert len(updates) == 1, updates  # Django's UPDATE, once, never a retry
        _check(reads, f"save {name}={new!r}")
        deferred = model.objects.nocache().only(name).get(pk=row.pk)
        setattr(deferred, name, values[(i + 2) % len(values)])
        deferred.save(update_fields=[name])
        _check(reads, f"save(update_fields) {name}")
    for row in rows[::2]:
        row.delete()
        _check(reads, f"delete {name}")
    model.objects.filter(pk__in=[r.pk for r in rows[1::2]]).update(**{name: values[0]})
    _check(reads, f"update {name}")


def test_only_django_own_exact_types_are_taggable():
    """The columns the plugin may tag: the rest fall back to table tags."""
    vendor = connection.vendor
    fields = {f.name: f for f in Kinds._meta.concrete_fields}
    taggable = {name for name, f in fields.items() if _values.taggable(f, vendor)}
    expected = {"id", "big", "boolean", "char", "date", "datetime", "email", "integer",
                "pos_big", "pos_int", "pos_small", "slug", "small",
                "text", "time", "url", "uuid"}
    if vendor == "postgresql":
        expected.add("decimal")  # rendered as stored: numeric(5,2) rounding
    assert taggable == expected
    if POSTGRES:
        from tests.fieldtypes.models import PgKinds

        assert not any(_values.taggable(f, vendor) for f in PgKinds._meta.concrete_fields
                       if not f.primary_key)


# -- the repros of the issue ---------------------------------------------------------------


def test_decimal_is_tagged_with_the_value_the_database_stored():
    """``create(decimal=1.005)`` is stored 1.01 on PostgreSQL (and 1.005 as a
    REAL on SQLite): a cached ``filter(decimal=1.01).count()`` must go."""
    read = lambda c: (Kinds.objects.all() if c else Kinds.objects.nocache()).filter(  # noqa: E731
        decimal=Decimal("1.01")).count()
    assert read(True) == 0 and read(True) == 0
    Kinds.objects.create(decimal=Decimal("1.005"))
    assert read(True) == read(False)
    if POSTGRES:
        assert read(False) == 1


@pytest.mark.skipif(not POSTGRES, reason="PostgreSQL rounds; SQLite decimals aren't tagged")
def test_positive_control_tagging_the_python_decimal_is_stale(monkeypatch):
    monkeypatch.setattr(_values, "_stored_decimal", lambda field, value: value)
    read = lambda c: (Kinds.objects.all() if c else Kinds.objects.nocache()).filter(  # noqa: E731
        decimal=Decimal("1.01")).count()
    assert read(True) == 0 and read(True) == 0
    Kinds.objects.create(decimal=Decimal("1.005"))
    assert (read(True), read(False)) == (0, 1)  # the bug the fix removes


def test_generic_relation_with_a_text_object_id_is_invalidated():
    owner = Owner.objects.create(name="o")

    def read(cached):
        qs = Owner.objects.all() if cached else Owner.objects.nocache()
        return list(qs.filter(pk=owner.pk).values_list("notes__body", flat=True))

    assert read(True) == [None] and read(True) == [None]
    Note.objects.create(content_object=owner, body="hello")
    assert read(True) == read(False) == ["hello"]


def test_save_never_fails_and_keeps_djangos_update(settings):
    """Every field type changed at once on one row: one UPDATE, the same SQL
    as without the plugin, and it succeeds."""
    row = Kinds.objects.create(**{n: v[0] for n, v in VALUES.items()})

    def save_with(i):
        loaded = Kinds.objects.nocache().get(pk=row.pk)
        for n, v in VALUES.items():
            setattr(loaded, n, v[i % len(v)])
        return _update_statements(loaded.save)

    with_plugin = save_with(1)
    settings.QUERYSTASH = {**settings.QUERYSTASH, "DISABLED_PLUGINS": ["fields"]}
    without = save_with(1)
    assert len(with_plugin) == 1 and with_plugin == without
    if POSTGRES:
        from tests.fieldtypes.models import PgKinds

        pg = PgKinds.objects.create(array=[1], texts=["a"], hstore={"a": "1"})
        settings.QUERYSTASH = {**settings.QUERYSTASH, "DISABLED_PLUGINS": []}
        loaded = PgKinds.objects.nocache().get(pk=pg.pk)
        loaded.array, loaded.texts, loaded.hstore = [2, 3], ["b"], {"b": "2"}
        assert len(_update_statements(loaded.save)) == 1
        assert PgKinds.objects.nocache().get(pk=pg.pk).array == [2, 3]


def test_save_of_a_field_tracker_model_never_fails():
    """django-model-utils' FieldTracker models: the issue's failing save
    (text next to smallint[] on PostgreSQL); and the reads stay fresh."""
    from tests.fieldtypes.models import Tracked

    def read(cached):
        qs = Tracked.objects.all() if cached else Tracked.objects.nocache()
        return sorted(qs.filter(name="a", level=1).values_list("pk", flat=True))

    row = Tracked.objects.create(name="a", level=0, data={"k": [1, 2]})
    assert read(True) == read(True) == []
    row = Tracked.objects.nocache().get(pk=row.pk)
    row.level = 1
    row.data = {"k": [3]}
    assert len(_update_statements(row.save)) == 1
    assert read(True) == read(False) == [row.pk]
    row.name = "b"
    row.save(update_fields=["name"])
    assert read(True) == read(False) == []
    if POSTGRES:
        from tests.fieldtypes.models import PgTracked

        pg = PgTracked.objects.create(name="x", levels=[1, 2])
        pg = PgTracked.objects.nocache().get(pk=pg.pk)
        pg.levels = [3]
        pg.name = "y"
        assert len(_update_statements(pg.save)) == 1
        assert PgTracked.objects.nocache().get(pk=pg.pk).levels == [3]


def test_old_values_read_equals_the_orms_on_every_type():
    """A save's old-values read runs SQL compiled once per connection and
    applies Django's converters itself (``_capture._old_row``): on every
    field type and boundary value, it gives what the ORM's ``values_list``
    gives, and the SQL is the ORM's."""
    from django.db import connections, transaction
    from querystash_fields import _capture

    model = Kinds
    vendor = connection.vendor
    fields = [f for f in model._meta.local_concrete_fields
              if not f.primary_key and _values.taggable(f, vendor)]
    assert len(fields) >= 10, [f.name for f in fields]  # the types it must cover
    values = {f.name: VALUES[f.name] for f in fields if f.name in VALUES}
    rows = [model.objects.create(**{name: vals[i % len(vals)] for name, vals in values.items()})
            for i in range(max(map(len, values.values())))]
    rows.append(model.objects.create())  # every column NULL
    how = _capture._lockable(connection)
    wrapper = connections["default"]  # ``connection`` is a proxy of it
    wrapper.__dict__.pop(_capture._READS, None)
    with transaction.atomic():
        for row in rows:
            with CaptureQueriesContext(connection) as ctx:
                got = _capture._old_row(model, "default", row.pk, fields, how)
            orm = list(_capture._old_query(model, "default", row.pk, fields, how))
            expected = dict(zip([f.attname for f in fields], orm[0], strict=True))
            assert got == expected, row.pk
            assert {k: type(v) for k, v in got.items()} == \
                {k: type(v) for k, v in expected.items()}, row.pk
            sql = _capture._old_query(model, "default", row.pk, fields, how).query \
                .get_compiler("default").as_sql()[0]
            assert [q["sql"] for q in ctx.captured_queries] == [sql % (row.pk,)]
        assert _capture._old_row(model, "default", 10**9, fields, how) is None
    compiled = wrapper.__dict__[_capture._READS]
    assert list(compiled) == [(model, model._meta.db_table, how,
                               tuple(f.column for f in fields))]
