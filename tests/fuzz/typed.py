"""Field-scoped reads and writes over ``Typed`` (one column of each Django
field type): querystash-fields' ``.cache("<field>")`` tags, rendered from the
values reads compare and writes store, on every write path.

Value domains are small and hold the boundaries where the Python value and
the stored one differ or where two spellings are equal in the database:
decimals that round (1.005 with 2 places), the same instant in two time
zones, naive and aware datetimes, case-only and trailing-space differences,
'' and NULL, IPv6 spellings, case-insensitive collations, text object ids.
Writes draw from the same domains, so field-scoped reads hit and are then
invalidated (or must stay valid).
"""

from __future__ import annotations

import uuid
import warnings
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.models import F

from tests.fuzzapp.models import Owner, Typed

#: Typed's columns a read may filter on (with .cache("<field>")) and writes change
FIELDS = ["key", "char", "char_null", "text", "small", "big", "pos", "boolean", "dec", "flt",
          "day", "moment", "clock", "span", "uid", "blob", "data", "ip", "email", "slug", "url",
          "coll", "owner", "object_pk"]
#: columns F() arithmetic applies to, with the step added
F_STEPS = {"small": -1, "big": 1, "pos": 1, "dec": Decimal("0.005"), "flt": 0.1,
           "span": timedelta(seconds=1)}
#: the column pairs of ``.cache("a", "b")`` reads (each pair takes a scheme slot)
PAIRS = [("char", "small"), ("owner", "boolean"), ("dec", "day"), ("moment", "uid"),
         ("text", "char_null"), ("email", "clock"), ("key", "coll"), ("span", "slug")]
#: `__in` is not a lookup Django offers on these
NO_IN = {"data"}
#: a NULL filter value means the JSON null there, not SQL NULL: isnull only elsewhere
NULLABLE = {"char_null", "dec", "flt", "day", "moment", "clock", "span", "uid", "blob", "data",
            "ip", "owner"}


def domain(name: str) -> list:
    """The values reads filter on and writes store, for column ``name``."""
    if name == "moment":
        if settings.USE_TZ:
            # 23:30 UTC and 01:30+02:00 the next day are the same instant; the
            # naive one is read in TIME_ZONE (with Django's RuntimeWarning).
            return [None, datetime(2024, 1, 1, 23, 30, tzinfo=UTC),
                    datetime(2024, 1, 2, 1, 30, tzinfo=timezone(timedelta(hours=2))),
                    datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 1, 17, 30)]
        return [None, datetime(2024, 1, 1, 23, 30), datetime(2024, 1, 2),
                datetime(2024, 1, 2, 0, 0, 0, 1)]
    if name == "day" and settings.USE_TZ:
        # a datetime in a date column: Django stores its date in TIME_ZONE
        # (America/Chicago, UTC-6): 2024-01-01, not the UTC 2024-01-02
        return [*DOMAINS[name], datetime(2024, 1, 2, 3, 0, tzinfo=UTC)]
    return DOMAINS[name]


DOMAINS: dict[str, list] = {
    "key": [1, 2, 3, 4, 5, 6, 7, 8],
    "char": ["a", "A", "a ", "", "b"],
    "char_null": [None, "", "a", "A"],
    "text": ["t", "T", "t ", "", "long " * 20],
    "small": [0, 1, -1, 32767, "1"],  # "1": the Python value a string
    "big": [0, 1, 2**40, -(2**40)],
    "pos": [0, 1, 2],
    "boolean": [True, False, 0],
    # 1.005 and 1.01 are one stored value (PostgreSQL rounds half away from
    # zero); 1, 1.0 and 1.00 one value in three spellings
    "dec": [None, Decimal("1.005"), Decimal("1.01"), Decimal("1"), Decimal("1.00"),
            Decimal("1.004"), Decimal("0.995"), Decimal("0"), "0.995"],
    "flt": [None, 0.1, 0.1 + 0.2, 0.3, 1.0, 1],
    "day": [None, date(2024, 1, 1), date(2024, 1, 2)],
    "clock": [None, time(12, 0), time(12, 0, 0, 1), time(0, 0)],
    "span": [None, timedelta(0), timedelta(seconds=1), timedelta(days=1),
             timedelta(microseconds=1)],
    "uid": [None, uuid.UUID(int=1), uuid.UUID(int=2), "00000000000000000000000000000002"],
    "blob": [None, b"", b"a", b"A", b"\x00"],
    "data": [None, {"k": 1}, {"k": "1"}, [1], "s", 1],
    # "0:0:0:0:0:0:0:1" is stored as "::1"
    "ip": [None, "1.2.3.4", "::1", "0:0:0:0:0:0:0:1", "::ffff:1.2.3.4"],
    "email": ["a@x.io", "A@x.io", ""],
    "slug": ["s", "S", "s-1"],
    "url": ["http://a.io", "http://A.io", ""],
    # case-insensitive collation: "a" = "A" in the database
    "coll": ["a", "A", "b", ""],
    "owner": [None, 1, 2, 3, 9, "2"],
    # text ids of owners (plus spellings no integer id equals)
    "object_pk": ["1", "2", "3", "01", ""],
}


#: values equal in the database, or spelt alike: a write aimed into a read's
#: value uses one of its group half the time (the boundaries field tags must get right)
NEAR: dict[str, list[list]] = {
    "char": [["a", "A", "a "]], "char_null": [["", None], ["a", "A"]], "text": [["t", "T", "t "]],
    "dec": [[Decimal("1.005"), Decimal("1.01")],
            [Decimal("1"), Decimal("1.00"), Decimal("0.995"), Decimal("1.004"), "0.995"]],
    "flt": [[0.1 + 0.2, 0.3], [1.0, 1]], "clock": [[time(12, 0), time(12, 0, 0, 1)]],
    "span": [[timedelta(0), timedelta(microseconds=1)]], "blob": [[b"", None], [b"a", b"A"]],
    "data": [[{"k": 1}, {"k": "1"}], ["s", 1]],
    "ip": [["::1", "0:0:0:0:0:0:0:1"], ["1.2.3.4", "::ffff:1.2.3.4"]],
    "email": [["a@x.io", "A@x.io"]], "slug": [["s", "S"]], "url": [["http://a.io", "http://A.io"]],
    "coll": [["a", "A"]], "object_pk": [["1", "01"]], "small": [[1, "1"]],
    "boolean": [[False, 0]], "owner": [[2, "2"]],
    "uid": [[uuid.UUID(int=2), "00000000000000000000000000000002"]],
    "day": [[date(2024, 1, 1), datetime(2024, 1, 2, 3, 0, tzinfo=UTC)]],
    # with USE_TZ the three are one instant (TIME_ZONE is America/Chicago, UTC-6)
    "moment": [[datetime(2024, 1, 1, 23, 30, tzinfo=UTC),
                datetime(2024, 1, 2, 1, 30, tzinfo=timezone(timedelta(hours=2))),
                datetime(2024, 1, 1, 17, 30)],
               [datetime(2024, 1, 1, 23, 30), datetime(2024, 1, 2, 0, 0, 0, 1),
                datetime(2024, 1, 2)]],
}


def near(name: str, value) -> list:
    """The values grouped with ``value`` for column ``name`` (that exist in its domain)."""
    allowed = domain(name)
    for group in NEAR.get(name, []):
        if any(v == value and type(v) is type(value) for v in group):
            return [v for v in group if v in allowed]
    return []


def drop_dangling_references(obj) -> None:
    """A kept instance's foreign keys to rows deleted since it was loaded are
    reloaded from its row (saving them would fail the FK constraint, as it
    would for any application)."""
    for f in obj._meta.concrete_fields:
        value = obj.__dict__.get(f.attname)
        if f.many_to_one and value is not None and \
                not f.related_model._base_manager.filter(pk=value).nocache().exists():
            obj.refresh_from_db(fields=[f.attname])


def _storable(name: str, value):
    """``value`` as a write may store it: owners that exist (or None)."""
    if name == "owner" and value is not None and \
            not Owner.objects.nocache().filter(pk=value).exists():
        return None
    return value


@contextmanager
def naive_datetimes_allowed():
    """Django's RuntimeWarning for a naive Typed.moment with USE_TZ is expected:
    the naive value is one of the domain's boundaries."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"DateTimeField Typed\.moment received a naive",
                                RuntimeWarning)
        yield


class TypedOps:
    """Mixed into the Fuzzer: ``t_*`` read templates and ``tw_write`` over Typed."""

    def typed_value(self, name: str):
        return self.pick(domain(name))

    def typed_row(self, key: int) -> Typed:
        values = {n: _storable(n, self.typed_value(n)) for n in FIELDS if n != "key"}
        values["owner_id"] = values.pop("owner", None)
        values["content_type"] = self._owner_ct() if self.rng.random() < 0.8 else None
        return Typed(key=key, **values)

    def _owner_ct(self):
        return ContentType.objects.get_for_model(Owner)

    def seed_typed(self) -> None:
        #: (field, value) of recent exact field-scoped reads: writes aim at them
        self.typed_targets: list[tuple[str, object]] = []
        #: instances loaded earlier, saved later
        self.typed_kept: list[Typed] = []
        #: swarm (even seeds): reads and writes on a third of the fields, which
        #: then meet far more often
        self.typed_fields = sorted(self.rng.sample(FIELDS, max(3, len(FIELDS) // 3))) \
            if self.swarm and len(FIELDS) > 6 else FIELDS
        self.typed_pairs = [p for p in PAIRS if set(p) <= set(self.typed_fields)]
        if self.swarm:
            self.log(f"swarm: Typed fields {self.typed_fields}")
        Typed.objects.bulk_create(self.typed_row(k) for k in range(1, 7))

    # -- reads ------------------------------------------------------------------

    def t_field(self):
        """``.cache("<field>")`` with an exact, ``__in`` or ``isnull`` condition."""
        name = self.pick(self.typed_fields)
        lookup = self.pick(["exact", "exact", "in", "isnull"])
        if lookup == "in" and name in NO_IN or lookup == "isnull" and name not in NULLABLE:
            lookup = "exact"
        if lookup == "in":
            value = self.rng.sample(domain(name), 2)
        elif lookup == "isnull":
            value = True
        else:
            value = self.typed_value(name)
            if value is None and name == "data":
                lookup = "isnull"
                value = True
        cond = {name if lookup == "exact" else f"{name}__{lookup}": value}
        for v in value if lookup == "in" else [None] if lookup == "isnull" else [value]:
            self._aim(name, v)
        # two shapes per field (rows and one other), so the reads repeat and hit
        shape = self.pick(["rows", ("values", "count", "cache_all")[FIELDS.index(name) % 3]])
        def thunk():
            qs = Typed.objects.cache() if shape == "cache_all" else Typed.objects.cache(name)
            qs = qs.filter(**cond)
            if shape == "count":
                return qs.count()
            if shape == "values":
                return tuple(qs.order_by("pk").values_list("pk", "key", name))
            return self.instances(qs.order_by("pk"))
        return f"typed {shape} .cache({name!r}).filter({cond!r})", thunk

    def t_multi(self):
        """``.cache("a", "b")`` on two conditions."""
        if not self.typed_pairs:
            return self.t_field()
        a, b = self.pick(self.typed_pairs)
        va, vb = self.typed_value(a), self.typed_value(b)
        self._aim(a, va)
        self._aim(b, vb)
        cond = {a if va is not None else f"{a}__isnull": va if va is not None else True,
                b if vb is not None else f"{b}__isnull": vb if vb is not None else True}
        def thunk():
            return self.instances(Typed.objects.cache(a, b).filter(**cond).order_by("pk"))
        return f"typed .cache({a!r}, {b!r}).filter({cond!r})", thunk

    def t_relations(self):
        """Field tags across a join and on the text generic object id."""
        which = self.pick(["owner_name", "generic", "owner_rank_in", "get_key",
                           "prefetch_target"])
        n, pk, r = self.pick(["ann", "bob", "cy"]), self.pick(domain("object_pk")), \
            self.pick([0, 1, 2, 3])
        k, field = self.typed_value("key"), self.pick(FIELDS)
        def thunk():
            if which == "owner_name":
                return self.instances(Typed.objects.cache("owner__name")
                                      .filter(owner__name=n).order_by("pk"))
            if which == "generic":
                return self.instances(Typed.objects.cache("content_type", "object_pk")
                                      .filter(content_type=self._owner_ct(), object_pk=pk)
                                      .order_by("pk"))
            if which == "owner_rank_in":
                return tuple(Typed.objects.cache("owner__rank", "owner")
                             .filter(owner__rank__in=[r, (r + 1) % 4]).order_by("pk")
                             .values_list("pk", "owner_id"))
            if which == "prefetch_target":
                # the generic relation followed from its text ids ("01" finds owner 1)
                qs = Typed.objects.cache("object_pk").filter(
                    object_pk__in=["1", "2", "3", "01"], content_type__isnull=False
                ).prefetch_related("target").order_by("pk")
                return tuple((t.pk, t.object_pk, None if t.target is None else
                              self.instances([t.target])) for t in qs)
            return self.instances([Typed.objects.cache("key").get(key=k)], only=field)
        return f"typed {which} name={n!r} object_pk={pk!r} rank={r} key={k} {field}", thunk

    @staticmethod
    def instances(rows, only: str | None = None) -> tuple:
        from .engine import norm  # engine imports this module

        if only is not None:
            return tuple((r.pk, norm(getattr(r, only if only != "owner" else "owner_id")))
                         for r in rows)
        return tuple(norm(r) for r in rows)

    # -- writes -----------------------------------------------------------------

    def tw_write(self) -> None:
        # save() is the path with old and new values (field tags); the others
        # invalidate the table's family
        self.pick([self._tw_save] * 4 + [self._tw_queryset, self._tw_bulk, self._tw_raw])()

    def _aim(self, name: str, value) -> None:
        if name != "key" and not (name == "data" and value is None):
            self.typed_targets = [*self.typed_targets[-7:], (name, value)]

    def _target(self) -> tuple[str, object] | None:
        """Most writes aim at a recent read's (field, value): they move a row
        out of it or into it, so the field tags a read depends on are the
        ones writes must reach."""
        if self.typed_targets and self.rng.random() < 0.85:
            return self.pick(self.typed_targets)
        return None

    def _changes(self, target: tuple[str, object] | None = None, out: bool = False) -> dict:
        names = [n for n in self.typed_fields if n != "key"] or ["char"]
        names = self.rng.sample(names, min(len(names), self.rng.randint(1, 2)))
        changes = {n: _storable(n, self.typed_value(n)) for n in names}
        if target is not None:
            name, value = target
            changes.pop(name, None)
            roll = self.rng.random()
            if out or roll < 0.3:
                others = [v for v in domain(name) if v != value]
                value = self.pick(others) if others else value
            elif roll < 0.65 and near(name, value):
                value = self.pick(near(name, value))
            changes = {name: _storable(name, value),
                       **dict(list(changes.items())[:self.rng.randint(0, 1)])}
        return changes

    @staticmethod
    def _attnames(changes: dict) -> dict:
        return {("owner_id" if n == "owner" else n): v for n, v in changes.items()}

    def _tw_save(self) -> None:
        op = self.pick(["full", "full", "update_fields", "update_fields", "create", "delete",
                        "keep", "stale"])
        if op == "create":
            taken = set(Typed.objects.nocache().values_list("key", flat=True))
            free = [k for k in domain("key") if k not in taken]
            if not free:
                op = "delete"
            else:
                row = self.typed_row(self.pick(free))
                row.save()
                self.log(f"Typed.create key={row.key} pk={row.pk}")
                return
        target = self._target()
        pk, out = self.existing(Typed), False
        if target is not None and self.rng.random() < 0.6:
            # a row the read returns: moved out of it
            name, value = target
            inside = list(Typed.objects.nocache().filter(**{name: value})
                          .order_by("pk").values_list("pk", flat=True))
            if inside:
                pk, out = self.pick(inside), True
        if pk is None:
            return
        if op == "delete":
            if Typed.objects.nocache().count() <= 3:
                return
            Typed.objects.nocache().get(pk=pk).delete()
            self.log(f"Typed(pk={pk}).delete()")
            return
        if op == "keep" or op == "stale" and not self.typed_kept:
            # saved later, after other writes may have changed its row: the
            # old values the plugin tags must be the stored ones, not these
            self.typed_kept = [*self.typed_kept[-3:], Typed.objects.nocache().get(pk=pk)]
            self.log(f"load and keep Typed(pk={pk})")
            return
        if op == "stale":
            obj = self.typed_kept.pop(self.rng.randrange(len(self.typed_kept)))
            if not Typed.objects.nocache().filter(pk=obj.pk).exists():
                self.log(f"kept Typed(pk={obj.pk}) not saved: row gone")
                return
            pk, out = obj.pk, False
            drop_dangling_references(obj)
        else:
            obj = Typed.objects.nocache().get(pk=pk)
        changes = self._changes(target, out)
        for attname, value in self._attnames(changes).items():
            setattr(obj, attname, value)
        fields = list(self._attnames(changes)) if op == "update_fields" else None
        obj.save(update_fields=fields)
        self.log(f"Typed(pk={pk}) {changes!r}; save(update_fields={fields}) [{op}]")

    def _tw_queryset(self) -> None:
        name = self.pick([n for n in self.typed_fields if n not in NO_IN] or ["char"])
        value = self.typed_value(name)
        cond = {name: value} if value is not None else {f"{name}__isnull": True}
        op = self.pick(["values", "values", "f", "delete"])
        qs = Typed.objects.filter(**cond)
        if op == "delete":
            if Typed.objects.nocache().count() <= 4:
                return
            out = qs.delete()
        elif op == "f":
            target = self.pick(sorted(F_STEPS))
            out = qs.update(**{target: F(target) + F_STEPS[target]})
            cond["F"] = target
        else:
            changes = self._changes(self._target())
            out = qs.update(**changes)
            cond["set"] = changes
        call = "delete()" if op == "delete" else \
            f"update({cond.pop('set')!r})" if op == "values" else \
            f"update({cond['F']}=F({cond.pop('F')!r}) + {F_STEPS.get(target)!r})"
        self.log(f"Typed.filter({cond!r}).{call} -> {out}")

    def _tw_bulk(self) -> None:
        if self.rng.random() < 0.5:
            rows = list(Typed.objects.nocache().order_by("pk"))
            chosen = self.rng.sample(rows, min(len(rows), self.rng.randint(1, 3)))
            changes = self._changes(self._target())
            for row in chosen:
                for attname, value in self._attnames(changes).items():
                    setattr(row, attname, value)
            Typed.objects.bulk_update(chosen, list(changes))
            self.log(f"Typed.bulk_update pks={[r.pk for r in chosen]} {changes!r}")
            return
        keys = self.rng.sample(domain("key"), 2)
        rows = [self.typed_row(k) for k in keys]
        update = list(self._changes(self._target()))
        Typed.objects.bulk_create(rows, update_conflicts=True, unique_fields=["key"],
                                  update_fields=update)
        self.log(f"Typed.bulk_create upsert keys={keys} update_fields={update} "
                 f"{[{f: getattr(r, f) for f in update} for r in rows]!r}")

    def _tw_raw(self) -> None:
        name = self.pick([n for n in self.typed_fields if n not in ("key", "data", "owner")]
                         or ["char"])
        field = Typed._meta.get_field(name)
        value, where = self.typed_value(name), self.pick(domain("key"))
        column = connection.ops.quote_name(field.column)
        param = field.get_db_prep_save(value, connection)
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {Typed._meta.db_table} SET {column} = %s "
                           f"WHERE {connection.ops.quote_name('key')} = %s", [param, where])
            rows = cursor.rowcount
        self.log(f"raw UPDATE Typed SET {name}={value!r} WHERE key={where} -> {rows}")
