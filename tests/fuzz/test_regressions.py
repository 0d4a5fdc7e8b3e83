"""Bugs the differential fuzzer found, each pinned by a test."""

from __future__ import annotations

import pytest
from django.db import connection, models

from querystash._sql import TableFinder
from tests.fuzzapp.models import Doc, Folder, Page

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("sql", [
    "REPLACE INTO doc (id, n) VALUES (1, 0)",
    "INSERT OR REPLACE INTO doc (id, n) VALUES (1, 0)",
    "replace into doc (id, n) select id, n from doc",
    "UPDATE OR REPLACE doc SET id = 2 WHERE id = 1",
])
def test_replace_writes_what_the_database_cascades_into(sql):
    # REPLACE deletes the conflicting row (SQLite, MySQL): the database's
    # ON DELETE actions run as for a DELETE.
    finder = TableFinder(["doc", "page"], db_cascades={"doc": {"page"}})
    kind, tables, everything = finder.write(sql)
    assert tables == {"doc", "page"}
    assert finder.write("INSERT INTO doc (id, n) VALUES (1, 0)")[1] == {"doc"}


@pytest.mark.skipif(not hasattr(models, "DB_CASCADE") or connection.vendor != "sqlite",
                    reason="REPLACE with a database-level cascade: SQLite, Django >= 6.1")
def test_replace_cascade_invalidates_the_children():
    # Found by tests/fuzz (raw_sql_spellings "replace_cascade").
    doc = Doc.objects.create(folder=Folder.objects.create(name="f"), n=0)
    Page.objects.create(doc=doc, num=1)
    assert Page.objects.filter(num=1).count() == 1
    assert Page.objects.filter(num=1).count() == 1  # a hit now (reads no doc row)
    with connection.cursor() as cursor:
        cursor.execute(f"REPLACE INTO {Doc._meta.db_table} (id, folder_id, n) "
                       f"SELECT id, folder_id, n FROM {Doc._meta.db_table}")
    assert Page.objects.nocache().filter(num=1).count() == 0  # the database cascaded
    assert Page.objects.filter(num=1).count() == 0
