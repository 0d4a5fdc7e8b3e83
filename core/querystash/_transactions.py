"""Per-connection transaction state: the tags a transaction has written.

Django connections are per thread (and per alias), so the state lives on the
connection object. It is cleared by commit, rollback and close, whatever
they raise, so no exception can leave it behind.
"""

from __future__ import annotations

import threading

_ATTR = "_querystash_written"

#: how many connections, in any thread, hold written tags now. The memoized
#: hit path looks for this thread's written tags only when it is not 0.
#: Changed under the lock, so it never undercounts: it may only stay high
#: (a connection dropped while holding tags), which costs the look, not a row.
holding = 0
_holding_lock = threading.Lock()


def in_transaction(connection) -> bool:
    # Not connected means not in a transaction: never connect just to ask.
    return connection.in_atomic_block or (
        connection.connection is not None and not connection.autocommit
    )


def written_tags(connection) -> set[str] | None:
    return connection.__dict__.get(_ATTR)


def record(connection, tags) -> None:
    global holding
    written = connection.__dict__.get(_ATTR)
    if written is None:
        with _holding_lock:
            holding += 1
            connection.__dict__[_ATTR] = set(tags)
    else:
        written.update(tags)


def take(connection) -> set[str] | None:
    global holding
    written = connection.__dict__.pop(_ATTR, None)
    if written is not None:
        with _holding_lock:
            holding -= 1
    return written


# -- one invalidation for a write's own transaction (RuntimeHandle.deferred) ---------

_DEFERRED = "_querystash_deferred"


def deferred(connection) -> set[str] | None:
    """The tags held back by an open ``deferred`` block on ``connection``:
    its writes' invalidations, made once when the block exits."""
    return connection.__dict__.get(_DEFERRED)


def defer(connection) -> set[str]:
    pending: set[str] = set()
    connection.__dict__[_DEFERRED] = pending
    return pending


def stop_deferring(connection) -> set[str]:
    return connection.__dict__.pop(_DEFERRED, None) or set()


# -- plugins' part in the post-COMMIT invalidation (RuntimeHandle.after_commit) -----

_SENDERS = "_querystash_after_commit"


def add_sender(connection, send) -> None:
    senders = connection.__dict__.setdefault(_SENDERS, {})
    senders[send] = None  # each callable once, in the order first added


def take_senders(connection) -> list:
    return list(connection.__dict__.pop(_SENDERS, None) or ())


def fill_is_safe(connection) -> bool:
    """May a read inside a transaction fill the cache?

    Only where each statement sees the latest committed data (PostgreSQL READ
    COMMITTED). A snapshot (SQLite, REPEATABLE READ, SERIALIZABLE) may be
    older than the stamps just read, so its rows must not be stored.
    """
    if connection.vendor != "postgresql":
        return False
    level = getattr(connection, "isolation_level", None)
    name = getattr(level, "name", None)
    if name is not None:  # psycopg 3 IsolationLevel
        return name in ("READ_COMMITTED", "READ_UNCOMMITTED")
    return level in (1, 4)  # psycopg2: READ COMMITTED, READ UNCOMMITTED
