"""The write path: every statement through a Django cursor.

ORM writes, m2m through rows, raw SQL, ``flush``, ``loaddata`` and migrations
all reach the database through ``CursorWrapper.execute``/``executemany``, so
capturing there misses none of them. The tables a statement writes are read
off its text (see ``_sql``); a statement whose tables can't be known
(a procedure call, a non-string statement) invalidates everything.

A write invalidates its tags at once; inside a transaction it also records
them, so reads of those tags bypass the cache until the transaction ends, and
they are invalidated again just before the commit and right after it (before
``on_commit`` callbacks run).
"""

from __future__ import annotations

import logging

from . import _capture, _runtime, _stamps, _stores, _transactions
from .events import WriteEvent

logger = logging.getLogger("querystash")


def statement_done(connection, sql) -> None:
    """Invalidate what ``sql``, just run on ``connection``, may have changed."""
    rt = _runtime.current
    if rt is None or (rt.storage is None and not _stores.known):
        return  # no store has been used: a first one is invalidated entirely
    try:
        if isinstance(sql, str):
            write = rt.finder.write(sql)
            if write is None:
                return
            kind, tables, everything = write
        else:  # psycopg sql.Composed, bytes...: can't see its tables
            kind, tables, everything, sql = "other", frozenset(), True, repr(sql)
        tags = rt.write_tags(WriteEvent(connection.alias, sql, tables, kind, everything))
        if not tags:
            return
        if _transactions.in_transaction(connection):
            _transactions.record(connection, tags)
        for table in tables:
            label = rt.table_labels.get(table)
            if label is not None:
                rt.stats.add(label, "invalidations")
        pending = _transactions.deferred(connection)
        if pending is not None:  # a write's own transaction: once, after its COMMIT
            pending.update(tags)
            return
        _stamps.invalidate(rt, tags)
    except Exception:  # never let cache bookkeeping break a write
        logger.exception("querystash: invalidation after a write failed")


def everything_changed(connection) -> None:
    statement_done(connection, None)


def transaction_ended(connection, invalidate: bool) -> None:
    written = _transactions.take(connection)
    senders = _transactions.take_senders(connection)
    if senders:  # plugins' part (RuntimeHandle.after_commit): they may send ours
        written = written or set()
        for send in senders:
            try:
                send(written if invalidate else set(), invalidate)
            except Exception:  # what it did not take, the core invalidates below
                logger.exception("querystash: a plugin's after-commit invalidation failed")
    if not written or not invalidate:
        return
    pending = _transactions.deferred(connection)
    if pending is not None:  # invalidated when the deferred block exits
        pending.update(written)
        return
    rt = _runtime.current
    if rt is not None:
        _stamps.invalidate(rt, written)


def _invalidate_written(connection) -> None:
    if _transactions.deferred(connection) is not None:
        return  # the block's one invalidation comes after the COMMIT
    written = _transactions.written_tags(connection)
    rt = _runtime.current
    if written and rt is not None:
        _stamps.invalidate(rt, written)


# -- the patched methods ------------------------------------------------------


def make_execute(original):
    def execute(self, sql, params=None):
        if _capture.active.get() is not None:  # memoize: raw SQL or a write vetoes
            _capture.statement(sql, _runtime.current)
        try:
            return original(self, sql, params)
        finally:
            statement_done(self.db, sql)

    return execute


def make_executemany(original):
    def executemany(self, sql, param_list):
        if _capture.active.get() is not None:  # memoize: raw SQL or a write vetoes
            _capture.statement(sql, _runtime.current)
        try:
            return original(self, sql, param_list)
        finally:
            statement_done(self.db, sql)

    return executemany


def make_callproc(original):
    def callproc(self, procname, params=None, kparams=None):
        _capture.veto(_capture.RAW_READ)  # memoize: a procedure may read or write anything
        try:
            return original(self, procname, params, kparams)
        finally:
            everything_changed(self.db)

    return callproc


def executescript(self, script):
    # sqlite3 only; reached through CursorWrapper.__getattr__ otherwise.
    _capture.veto(_capture.RAW_READ)  # memoize
    try:
        return self.cursor.executescript(script)
    finally:
        everything_changed(self.db)


def make_commit(original):
    def commit(self):
        # Once more just before COMMIT: entries filled with the old rows while
        # the transaction ran die now, not only after the commit, which leaves
        # only fills landing between these two points for the short gap
        # before the post-commit invalidation.
        _invalidate_written(self)
        try:
            original(self)
        finally:
            # Even after a failed commit: the server may have committed
            # before the connection broke.
            transaction_ended(self, invalidate=True)

    return commit


def make_set_autocommit(original):
    def set_autocommit(self, autocommit, *args, **kwargs):
        try:
            return original(self, autocommit, *args, **kwargs)
        finally:
            # Turning autocommit back on commits an open transaction on some
            # backends (SQLite) without passing through commit().
            if autocommit:
                transaction_ended(self, invalidate=True)

    return set_autocommit


def make_rollback(original):
    def rollback(self):
        try:
            return original(self)
        finally:
            transaction_ended(self, invalidate=False)

    return rollback


def make_close(original):
    def close(self):
        try:
            return original(self)
        finally:
            transaction_ended(self, invalidate=False)

    return close
