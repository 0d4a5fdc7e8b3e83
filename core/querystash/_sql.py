"""What a SQL string reads and writes, found from its text.

Reading the tables off the SQL text (rather than walking the query object)
sees every table the database will see: joins, filter subqueries, ``Exists()``,
annotation subqueries, unions, ``extra()``. Results are memoized per SQL
string, so a repeated query pays one dict lookup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_MEMO_LIMIT = 8192

#: first keywords of statements that change no table data
_NO_WRITE = frozenset(
    "SELECT SHOW EXPLAIN PRAGMA SAVEPOINT RELEASE ROLLBACK BEGIN START COMMIT END SET "
    "RESET VALUES VACUUM ANALYZE LOCK LISTEN NOTIFY UNLISTEN DECLARE FETCH CLOSE MOVE "
    "DEALLOCATE DISCARD CHECKPOINT DESCRIBE DESC USE GRANT REVOKE COMMENT PREPARE".split()
)
#: first keywords of statements that write the tables they name
_WRITE_KINDS = {
    "INSERT": "insert",
    "REPLACE": "insert",
    "UPSERT": "insert",
    "UPDATE": "update",
    "MERGE": "update",
    "DELETE": "delete",
    "TRUNCATE": "truncate",
    "COPY": "insert",
    "LOAD": "insert",
    "ALTER": "ddl",
    "DROP": "ddl",
    "CREATE": "ddl",
    "RENAME": "ddl",
}
_LEADING = re.compile(r"\s*(?:(?:--[^\n]*\n)|(?:/\*.*?\*/)|\()*\s*", re.S)
_WORD = re.compile(r"[A-Za-z]+")
_DML_INSIDE = re.compile(r"\b(INSERT|UPDATE|DELETE|MERGE)\b", re.I)
#: a ";" with more SQL after it: several statements in one string
_MORE = re.compile(r";\s*\S")
_CASCADE = re.compile(r"\bCASCADE\b", re.I)
#: REPLACE, INSERT OR REPLACE, UPDATE OR REPLACE delete the rows they conflict
#: with (SQLite, MySQL)
_REPLACE = re.compile(r"\bREPLACE\b", re.I)


class TableFinder:
    """Finds the known tables a SQL string names, and whether it writes."""

    def __init__(
        self,
        tables: Iterable[str],
        db_cascades: Mapping[str, Iterable[str]] | None = None,
        referenced_by: Mapping[str, Iterable[str]] | None = None,
    ):
        """:param db_cascades: table -> tables the database itself changes when
            its rows are deleted (foreign keys with a database-level on_delete).
        :param referenced_by: table -> every table with a foreign key to it
            (what ``TRUNCATE ... CASCADE`` empties)."""
        self._db_cascades = {k: frozenset(v) for k, v in (db_cascades or {}).items()}
        self._referenced_by = {k: frozenset(v) for k, v in (referenced_by or {}).items()}
        by_lower: dict[str, set[str]] = {}
        for name in tables:
            by_lower.setdefault(name.lower(), set()).add(name)
        self._by_lower = {k: frozenset(v) for k, v in by_lower.items()}
        names = sorted(by_lower, key=len, reverse=True)
        pattern = "|".join(re.escape(n) for n in names) or r"(?!x)x"
        # A table name is a whole identifier: not preceded or followed by an
        # identifier character, so "app_book" never matches "app_book_tags".
        self._re = re.compile(rf"(?<![\w$])(?:{pattern})(?![\w$])", re.I)
        self._tables: dict[str, frozenset[str]] = {}
        self._writes: dict[str, tuple[str, frozenset[str], bool] | None] = {}

    def tables(self, sql: str) -> frozenset[str]:
        try:
            return self._tables[sql]
        except KeyError:
            pass
        found: set[str] = set()
        for match in self._re.findall(sql):
            found |= self._by_lower[match.lower()]
        result = frozenset(found)
        if len(self._tables) >= _MEMO_LIMIT:
            self._tables.clear()
        self._tables[sql] = result
        return result

    def write(self, sql: str) -> tuple[str, frozenset[str], bool] | None:
        """``None`` for a statement that changes no data, else
        ``(kind, tables, everything)``; ``everything`` means the tables it
        changes cannot be known from its text (a procedure call, say)."""
        try:
            return self._writes[sql]
        except KeyError:
            pass
        result = self._classify(sql)
        if len(self._writes) >= _MEMO_LIMIT:
            self._writes.clear()
        self._writes[sql] = result
        return result

    def _classify(self, sql: str) -> tuple[str, frozenset[str], bool] | None:
        if _MORE.search(sql):
            return self._classify_many(sql)
        return self._classify_one(sql)

    def _classify_many(self, sql: str) -> tuple[str, frozenset[str], bool] | None:
        # Several statements in one execute() (PostgreSQL's simple query
        # protocol runs them all): any of them may write, not only the first.
        # Splitting on every ";" may cut a string literal: a piece that is not
        # a statement classifies as "other" (everything), never as no write.
        found = [w for w in map(self._classify_one, sql.split(";")) if w is not None]
        if not found:
            return None
        if len(found) == 1:
            return found[0]
        return ("other", frozenset().union(*(w[1] for w in found)), True)

    def _classify_one(self, sql: str) -> tuple[str, frozenset[str], bool] | None:
        if not sql.strip():
            return None
        start = _LEADING.match(sql).end()
        word = _WORD.match(sql, start)
        keyword = word.group(0).upper() if word else ""
        if keyword in ("WITH", "EXPLAIN"):
            # A CTE may write; PostgreSQL's EXPLAIN ANALYZE runs the statement.
            match = _DML_INSIDE.search(sql)
            if match is None:
                return None
            keyword = match.group(1).upper()
        if keyword in _NO_WRITE:
            return None
        kind = _WRITE_KINDS.get(keyword)
        if kind is None:
            return ("other", self.tables(sql), True)
        tables = self.tables(sql)
        if kind == "truncate" and _CASCADE.search(sql):
            tables = _closure(tables, self._referenced_by)
        elif kind in ("delete", "truncate") or (
            kind in ("insert", "update") and _REPLACE.search(sql)
        ):
            # The database's own ON DELETE actions change the tables they
            # reach; a REPLACE deletes what it conflicts with, so it too.
            tables = _closure(tables, self._db_cascades)
        return (kind, tables, False)


def _closure(tables: frozenset[str], edges: Mapping[str, frozenset[str]]) -> frozenset[str]:
    found, todo = set(tables), list(tables)
    while todo:
        for other in edges.get(todo.pop(), ()):
            if other not in found:
                found.add(other)
                todo.append(other)
    return frozenset(found)
