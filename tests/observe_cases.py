"""One read per reason code (``querystash.REASONS``), shared by the tests of
``explain()`` (tests/test_explain.py) and of the debug-toolbar panel
(tests/test_debug_toolbar.py): each case is a function that makes the read,
setting up and tearing down what it needs around it.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.db.models import Value
from django.db.models.functions import Now
from django.db.models.sql import Query
from django.db.models.sql.constants import CURSOR, SINGLE
from django.test import override_settings

import querystash
from querystash import _breaker, _reasons, _runtime
from querystash._queryset import CacheSpec
from querystash._transactions import fill_is_safe
from tests.plugins import registered
from tests.plugins.veto_eligibility import VetoAuthors
from tests.test_keys import Opaque
from tests.testapp.models import Author, Book

TEMP = "qs_observe_temp"


def make_data() -> Book:
    author = Author.objects.create(name="Le Guin")
    return Book.objects.create(title="The Dispossessed", author=author)


def qs_settings(**changes):
    return override_settings(QUERYSTASH={**settings.QUERYSTASH, **changes})


def titles(qs) -> list:
    return list(qs.values_list("title", flat=True))


def _untracked():
    cursor = Book.objects.all().query.get_compiler("default").execute_sql(CURSOR)
    cursor.close()


def _no_table():
    query = Query(None)
    query.add_annotation(Value(1), "one")
    query._querystash = CacheSpec(frozenset(["aggregate"]), None, ())
    query.get_compiler("default").execute_sql(SINGLE)


def _read_your_writes():
    with transaction.atomic():
        Book.objects.filter(pk__lt=0).update(title="nothing")
        titles(Book.objects.all())


def _snapshot():
    with transaction.atomic():
        titles(Book.objects.filter(title__startswith="The"))


def _locking():
    with transaction.atomic():
        list(Book.objects.select_for_update())


@contextmanager
def _temp_table():
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE {TEMP} (book_id integer)")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {TEMP}")


def _unwatched():
    with _temp_table():
        titles(Book.objects.cache().extra(tables=[TEMP]))


def _ineligible():
    with registered(VetoAuthors(), "veto_authors"):
        list(Author.objects.values_list("name", flat=True))


@contextmanager
def _store_out():
    rt = _runtime.current
    breaker = _breaker.Breaker(SimpleNamespace(storage=rt.storage,
                                               stamp_prefix=rt.stamp_prefix))
    breaker._start_payer = lambda: None  # no background payer: nothing pays it back
    breaker.trip(rt, ConnectionError("the store is down (planted)"))
    saved, rt.breaker = rt.breaker, breaker
    try:
        yield
    finally:
        rt.breaker = saved


def _out():
    with _store_out():
        titles(Book.objects.filter(title__contains="Disp"))


def _off():
    with qs_settings(ENABLED=False):
        titles(Book.objects.all())


def _ignored():
    with qs_settings(IGNORE_TABLES=["testapp_tag"]):
        list(Book.objects.filter(tags__name="sf").values_list("title", flat=True))


def _unmanaged():
    from tests.test_eligibility import unmanaged_view_model

    with unmanaged_view_model() as view:
        list(view.objects.values_list("name", flat=True))


def _disabled():
    with querystash.disabled():
        titles(Book.objects.all())


#: reason code -> the read that gets it (a function making exactly one read
#: of interest: the first read it makes)
CASES = {
    _reasons.OFF: _off,
    _reasons.DISABLED: _disabled,
    _reasons.READ_YOUR_WRITES: _read_your_writes,
    _reasons.STORE_OUT: _out,
    _reasons.NOCACHE: lambda: titles(Book.objects.nocache()),
    _reasons.NOT_CONFIGURED: lambda: list(Group.objects.all()),
    _reasons.OP_NOT_ENABLED: lambda: list(Book.objects.iterator()),
    _reasons.OP_NOT_ASKED: lambda: titles(Book.objects.cache(ops=["count"])),
    _reasons.UNTRACKED: _untracked,
    _reasons.UNWATCHED: _unwatched,
    _reasons.LOCKING: _locking,
    _reasons.EXPLAIN: lambda: Book.objects.filter(pk=1).explain(),
    _reasons.NO_TABLE: _no_table,
    _reasons.IGNORED_TABLE: _ignored,
    _reasons.UNMANAGED: _unmanaged,
    _reasons.VOLATILE: lambda: titles(Book.objects.order_by("?")),
    _reasons.RAW_SQL: lambda: titles(Book.objects.extra(where=["1 = 1"])),
    _reasons.INELIGIBLE: _ineligible,
    _reasons.UNKEYED: lambda: titles(Book.objects.filter(title=Opaque("The Dispossessed"))),
    _reasons.SNAPSHOT: _snapshot,
    _reasons.EMPTY: lambda: titles(Book.objects.filter(pk__in=[])),
}


def snapshot_expected() -> str:
    """SNAPSHOT happens where a transaction's reads may not fill: SQLite,
    not PostgreSQL's READ COMMITTED (there the same read fills)."""
    return "" if fill_is_safe(connection) else _reasons.SNAPSHOT


#: more reads that get a code the table above already covers: Now() is
#: volatile like order_by('?')
MORE = {
    "now": (_reasons.VOLATILE, lambda: titles(Book.objects.filter(published__lte=Now()))),
}
