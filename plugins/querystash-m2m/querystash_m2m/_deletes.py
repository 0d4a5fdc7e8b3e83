"""Deletes of through rows: ``DELETE ... RETURNING`` the rows deleted.

Every ORM delete of through rows — ``remove()``, ``clear()``, ``set()``'s
removals, the cascade of deleting either side, ``delete()`` of a custom
through row or queryset — reaches ``SQLDeleteCompiler.execute_sql``, one
DELETE at a time. With querystash-fields live, that DELETE is run with a
``RETURNING`` of the table's columns, so the rows it removed are known from
the statement itself: atomically, whatever ran concurrently, with no extra
query. They are handed to querystash-fields, which invalidates the queries
about those rows only.

Only on PostgreSQL and SQLite >= 3.35 (DELETE ... RETURNING); elsewhere the
DELETE runs as Django wrote it and invalidates the table's family.
"""

from __future__ import annotations

from django.core.exceptions import EmptyResultSet
from django.db.models.sql import constants

from . import _rows, _state


def supports_returning(connection) -> bool:
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        return connection.Database.sqlite_version_info >= (3, 35)
    return False


def make_execute_sql(compiler_class, original=None):
    """``original``: the class's own ``execute_sql``, or None when it inherits
    one (looked up at call time, so a later patch of the base still runs)."""

    def run_original(self, result_type, *args, **kwargs):
        if original is not None:
            return original(self, result_type, *args, **kwargs)
        return super(compiler_class, self).execute_sql(result_type, *args, **kwargs)

    def execute_sql(self, result_type=constants.MULTI, *args, **kwargs):
        model = self.query.model
        if (result_type != constants.ROW_COUNT or model is None or not _state.is_through(model)
                or not _state.precise(self.using) or not supports_returning(self.connection)):
            return run_original(self, result_type, *args, **kwargs)
        try:
            sql, params = self.as_sql()
        except EmptyResultSet:
            sql = None
        if not sql:
            return run_original(self, result_type, *args, **kwargs)
        fields = list(model._meta.local_concrete_fields)
        qn = self.connection.ops.quote_name
        sql = f"{sql} RETURNING {', '.join(qn(f.column) for f in fields)}"
        table = model._meta.db_table
        with _state.capture.writing(self.using, table, "delete") as statement:
            with self.connection.cursor() as cursor:
                cursor.execute(sql, params)
                raw = cursor.fetchall()
            if len(raw) <= _state.max_rows():  # else the block's exit: the family
                rows = _rows.returned(self.connection, fields, raw)
                statement.settle([(table, model, row, None) for row in rows])
        return len(raw)

    return execute_sql
