"""pytest plugin loaded (``-p qs_thirdparty_plugin``) into a third-party suite's run.

- Binds Django's settings to ``qs_thirdparty_settings`` before the suite's conftest can
  point DJANGO_SETTINGS_MODULE elsewhere.
- Replaces ``django.test.TestCase`` (before the suite's modules import it) by a
  TransactionTestCase that flushes after each test and runs ``setUpTestData`` before each:
  inside TestCase's per-class transaction querystash rightly neither fills nor serves, so
  the cache would never be exercised. The plain run uses the same replacement, so the two
  runs differ only by querystash.
- Writes, at the end of the session, every test's outcome and querystash's counters to the
  JSON file named by QS_THIRDPARTY_RESULTS.
"""

from __future__ import annotations

import inspect
import json
import os

import django
import pytest
from django.conf import settings

settings.INSTALLED_APPS  # noqa: B018 -- load the settings now, from our module
django.setup()

import django.test  # noqa: E402
from django.apps import apps  # noqa: E402
from django.core.management.color import no_style  # noqa: E402
from django.db import connections, transaction  # noqa: E402
from django.test import TransactionTestCase  # noqa: E402

#: Rows migrate creates and that a TestCase would see in every test. The flush keeps them
#: (recreating them through post_migrate after every test is most of a test's time).
KEEP_TABLES = frozenset({"django_content_type", "auth_permission"})


class FlushingTestCase(TransactionTestCase):
    """django.test.TestCase without transactions: data set up per test, flushed after."""

    def _fixture_teardown(self):
        # TransactionTestCase's flush, minus KEEP_TABLES and the post_migrate signal; the
        # one post_migrate row that is flushed, the default Site, is put back. The flush's
        # statements go through Django's cursor, so querystash sees them.
        for db_name in self._databases_names(include_mirrors=False):
            conn = connections[db_name]
            tables = [t for t in conn.introspection.django_table_names(
                only_existing=True, include_views=False) if t not in KEEP_TABLES]
            if conn.vendor == "postgresql":
                # One TRUNCATE of every table costs ~0.5 s on PostgreSQL; DELETEs of these
                # few rows cost milliseconds. Django's foreign keys are DEFERRABLE INITIALLY
                # DEFERRED, so in one transaction the order doesn't matter.
                with transaction.atomic(using=db_name), conn.cursor() as cursor:
                    for table in tables:
                        cursor.execute(f"DELETE FROM {conn.ops.quote_name(table)}")
            else:
                conn.ops.execute_sql_flush(
                    conn.ops.sql_flush(no_style(), tables, reset_sequences=False))
            if apps.is_installed("django.contrib.sites"):
                from django.contrib.sites.management import create_default_site
                from django.contrib.sites.models import Site

                create_default_site(apps.get_app_config("sites"), verbosity=0, using=db_name)
                Site.objects.clear_cache()

    def _should_reload_connections(self):
        # As TestCase: keep the connection (TransactionTestCase reconnects per test).
        return False

    @classmethod
    def setUpTestData(cls):
        pass

    # Django 6.0 made _fixture_setup a classmethod; it loads ``fixtures`` in both.
    if isinstance(inspect.getattr_static(TransactionTestCase, "_fixture_setup"), classmethod):

        @classmethod
        def _fixture_setup(cls):
            super()._fixture_setup()
            cls.setUpTestData()

    else:

        def _fixture_setup(self):
            super()._fixture_setup()
            self.setUpTestData()


django.test.TestCase = FlushingTestCase

if settings.MODE == "cached":
    # As in our own suite: every read of a remembered query shape also
    # compiles, and a difference in SQL or in the query left fails the test.
    from querystash import _compiled

    _compiled.CHECK = True

if os.environ.get("QS_THIRDPARTY_PLANT") == "no-invalidation":
    # Positive control (test_thirdparty.py): writes no longer invalidate, so cached reads go
    # stale and VERIFY must catch them.
    from querystash import _writes

    _writes.statement_done = lambda connection, sql: None

_outcomes: dict[str, dict] = {}


def pytest_runtest_logreport(report):
    entry = _outcomes.setdefault(report.nodeid, {"outcome": "passed", "longrepr": ""})
    if report.failed:
        entry["outcome"] = "failed"
        entry["longrepr"] += f"[{report.when}] {report.longreprtext[-4000:]}\n"
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    result = {"exitstatus": int(exitstatus), "tests": _outcomes, "mode": settings.MODE}
    if settings.MODE == "cached":
        import querystash
        from querystash import plugins

        result["stats"] = querystash.stats()
        result["plugins"] = sorted(plugins.versions)
        result["plugin_errors"] = [str(e) for e in plugins.load_errors]
    with open(os.environ["QS_THIRDPARTY_RESULTS"], "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
