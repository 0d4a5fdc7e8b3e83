"""Transaction-aware bookkeeping: writes inside ``atomic``, commit, rollback,
savepoints, on_commit, and no state left behind by any exception."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    IntegrityError,
    connection,
    connections,
    transaction,
)

from tests.helpers import in_thread
from tests.testapp.models import Author, Book, Tag

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRES = connection.vendor == "postgresql"
STATE = "_querystash_written"


def books(m):
    return list(m.order_by("pk").values_list("pk", "title", "status"))


def tags(m):
    return list(m.order_by("pk").values_list("pk", "name"))


def cached_books():
    return books(Book.objects)


def db_books():
    return books(Book.objects.nocache())


@pytest.fixture
def data():
    alice = Author.objects.create(name="Alice", age=35)
    Book.objects.create(title="One", author=alice)
    Book.objects.create(title="Two", author=alice)
    Tag.objects.create(name="red")
    return {"alice": alice}


@pytest.fixture
def n(counts):
    def get(field, model="testapp.Book"):
        return counts(model).get(field, 0)

    return get


def prime_books(n):
    first = cached_books()
    hits = n("hits")
    assert cached_books() == first
    assert n("hits") == hits + 1
    return first


def wrapper():
    """The real DatabaseWrapper (``connection`` is a proxy with its own __dict__)."""
    return connections[DEFAULT_DB_ALIAS]


def has_state():
    return STATE in wrapper().__dict__


def assert_no_state():
    assert not has_state(), wrapper().__dict__.get(STATE)


@contextmanager
def patched(name, replacement):
    """Shadow a method on this thread's connection object, then remove it."""
    conn = wrapper()
    conn.__dict__[name] = replacement
    try:
        yield
    finally:
        conn.__dict__.pop(name, None)


def assert_hits_again(n, read=cached_books, model="testapp.Book"):
    read()
    hits = n("hits", model)
    read()
    assert n("hits", model) == hits + 1, "reads should be served from the cache again"


# -- commit -------------------------------------------------------------------------------


def test_write_in_atomic_invalidates_at_once_and_after_commit(data, n):
    old = prime_books(n)
    with transaction.atomic():
        Book.objects.filter(title="One").update(status=5)
        hits = n("hits")
        # Another connection reads the same query while the write is uncommitted.
        seen = in_thread(cached_books)
        assert n("hits") == hits, "another connection was served the pre-write entry"
        assert seen == old  # what that connection's database shows: uncommitted rows unseen
        # The other connection may have filled the cache with the committed
        # (old) rows; the commit must invalidate again.
    assert_no_state()
    hits = n("hits")
    after = cached_books()
    assert after == db_books() != old
    assert n("hits") == hits
    assert in_thread(cached_books) == after
    assert_hits_again(n)


def test_read_your_writes_bypasses(data, n):
    prime_books(n)
    with transaction.atomic():
        b = Book.objects.create(title="New", author=data["alice"])
        bypasses, hits = n("bypasses"), n("hits")
        inside = cached_books()
        assert b.pk in [row[0] for row in inside]
        assert inside == db_books()
        assert n("bypasses") == bypasses + 1
        assert n("hits") == hits
        # a join through the written table bypasses too
        assert Author.objects.filter(books__title="New").count() == 1
        assert has_state()
        # Bypassed reads fill nothing: still bypassed, never hit.
        fills = n("fills")
        cached_books()
        assert n("fills") == fills and n("hits") == hits
    assert_no_state()
    assert cached_books() == db_books()
    assert_hits_again(n)


def test_read_of_unwritten_table_inside_atomic_not_bypassed(data, n):
    tags(Tag.objects)
    tags(Tag.objects)
    with transaction.atomic():
        Book.objects.create(title="New", author=data["alice"])
        bypasses, hits = n("bypasses", "testapp.Tag"), n("hits", "testapp.Tag")
        tags(Tag.objects)
        assert n("bypasses", "testapp.Tag") == bypasses
        assert n("hits", "testapp.Tag") == hits + 1


def test_manual_transaction_commit(data, n):
    old = prime_books(n)
    transaction.set_autocommit(False)
    try:
        Book.objects.filter(title="Two").update(title="Deux")
        assert cached_books() == db_books() != old
        transaction.commit()
    finally:
        transaction.set_autocommit(True)
    assert_no_state()
    assert cached_books() == db_books() != old
    assert_hits_again(n)


def test_durable_atomic(data, n):
    old = prime_books(n)
    with transaction.atomic(durable=True):
        Book.objects.filter(title="Two").update(status=3)
    assert_no_state()
    assert cached_books() == db_books() != old
    assert_hits_again(n)


def test_durable_error_leaves_no_state(data, n):
    old = prime_books(n)
    with pytest.raises(RuntimeError, match="durable"):
        with transaction.atomic():
            Book.objects.filter(title="Two").update(status=3)
            with transaction.atomic(durable=True):
                pass
    assert_no_state()
    assert cached_books() == db_books() == old
    assert_hits_again(n)


# -- on_commit -------------------------------------------------------------------------------


def test_on_commit_callback_sees_fresh_reads(data, n):
    old = prime_books(n)
    seen = []
    with transaction.atomic():
        Book.objects.filter(title="One").update(title="Uno")
        # Another connection refills the cache with the committed, pre-write rows.
        assert in_thread(cached_books) == old
        in_thread(cached_books)
        transaction.on_commit(lambda: seen.append((cached_books(), db_books())))
    assert len(seen) == 1
    got, truth = seen[0]
    assert got == truth != old, "on_commit callback was served the pre-commit rows"
    assert_no_state()


def test_on_commit_after_nested_atomic(data, n):
    old = prime_books(n)
    seen = []
    with transaction.atomic():
        with transaction.atomic():
            Book.objects.filter(title="One").update(title="Uno")
            transaction.on_commit(lambda: seen.append(cached_books()))
        assert not seen
    assert seen == [db_books()] and seen[0] != old


# -- rollback ---------------------------------------------------------------------------------


def test_rollback_leaves_cache_consistent(data, n):
    old = prime_books(n)
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            Book.objects.create(title="Ghost", author=data["alice"])
            Book.objects.filter(title="One").update(status=9)
            assert cached_books() == db_books() != old  # read-your-writes
            raise ZeroDivisionError
    assert_no_state()
    assert cached_books() == db_books() == old
    assert_hits_again(n)


def test_rollback_while_other_connection_fills(data, n):
    old = prime_books(n)
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            Book.objects.filter(title="One").update(status=9)
            in_thread(cached_books)
            in_thread(cached_books)
            raise ZeroDivisionError
    assert cached_books() == db_books() == old


def test_savepoint_rollback(data, n):
    old = prime_books(n)
    prime_tags = tags(Tag.objects)
    with transaction.atomic():
        Book.objects.create(title="Kept", author=data["alice"])
        with pytest.raises(ZeroDivisionError):
            with transaction.atomic():
                Book.objects.create(title="Dropped", author=data["alice"])
                Tag.objects.create(name="dropped")
                assert "Dropped" in [r[1] for r in cached_books()]
                raise ZeroDivisionError
        inside = cached_books()
        assert inside == db_books()
        titles = [r[1] for r in inside]
        assert "Kept" in titles and "Dropped" not in titles
        assert tags(Tag.objects) == tags(Tag.objects.nocache()) == prime_tags
    assert_no_state()
    after = cached_books()
    assert after == db_books() != old
    assert "Dropped" not in [r[1] for r in after]
    assert tags(Tag.objects) == prime_tags
    assert_hits_again(n)


def test_savepoint_rollback_then_outer_rollback(data, n):
    old = prime_books(n)
    with pytest.raises(KeyError):
        with transaction.atomic():
            try:
                with transaction.atomic():
                    Book.objects.filter(title="One").update(status=4)
                    raise ValueError
            except ValueError:
                pass
            Book.objects.filter(title="Two").update(status=4)
            raise KeyError
    assert_no_state()
    assert cached_books() == db_books() == old


# -- exceptions -------------------------------------------------------------------------------


def test_exception_in_atomic_leaves_no_state(data, n):
    prime_books(n)
    with pytest.raises(ValueError):
        with transaction.atomic():
            Book.objects.create(title="Ghost", author=data["alice"])
            assert has_state()
            raise ValueError("boom")
    assert_no_state()
    assert cached_books() == db_books()
    assert_hits_again(n)


def test_integrity_error_inside_atomic_leaves_no_state(data, n):
    prime_tags = tags(Tag.objects)
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            Tag.objects.create(name="green")
            Tag.objects.create(name="red")  # unique violation
    assert_no_state()
    assert tags(Tag.objects) == tags(Tag.objects.nocache()) == prime_tags
    assert_hits_again(n, lambda: tags(Tag.objects), "testapp.Tag")


def test_exception_in_nested_atomic_enter_leaves_no_state(data, n):
    old = prime_books(n)

    def broken_savepoint(sid):
        raise DatabaseError("savepoint failed")

    with pytest.raises(DatabaseError, match="savepoint failed"):
        with transaction.atomic():
            Book.objects.filter(title="One").update(status=6)
            with patched("_savepoint", broken_savepoint):
                with transaction.atomic():
                    pass
    assert_no_state()
    assert cached_books() == db_books() == old
    assert_hits_again(n)


def test_failed_commit_monkeypatched(data, n):
    old = prime_books(n)

    def broken_commit():
        raise DatabaseError("commit failed")

    with pytest.raises(DatabaseError, match="commit failed"):
        with patched("_commit", broken_commit):
            with transaction.atomic():
                Book.objects.filter(title="One").update(status=6)
                assert has_state()
    assert_no_state()
    # The commit failed and Django rolled back.
    assert cached_books() == db_books() == old
    assert_hits_again(n)


def test_failed_commit_deferred_constraint(data, n):
    # Django creates foreign keys DEFERRABLE INITIALLY DEFERRED on both
    # PostgreSQL and SQLite: the violation surfaces at COMMIT.
    old = prime_books(n)
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            Book.objects.create(title="Orphan", author_id=987654)
            Book.objects.filter(title="One").update(status=6)
            assert len(cached_books()) == 3
    assert_no_state()
    assert cached_books() == db_books() == old
    assert_hits_again(n)


def test_closed_connection_mid_atomic_leaves_no_state(data, n):
    old = prime_books(n)
    with pytest.raises(Exception):  # noqa: B017 - whatever Django raises after close
        with transaction.atomic():
            Book.objects.filter(title="One").update(status=6)
            connection.close()
            raise ValueError
    assert_no_state()
    assert cached_books() == db_books() == old


# -- fills inside a transaction ----------------------------------------------------------------


@pytest.mark.skipif(POSTGRES, reason="SQLite holds a snapshot inside a transaction")
def test_sqlite_no_fill_inside_transaction(data, n):
    with transaction.atomic():
        misses = n("misses")
        first = cached_books()
        second = cached_books()
        assert first == second == db_books()
        assert n("misses") == misses + 2, "the second read in the atomic block was a hit"
        assert n("fills") == 0
    # A hit is fine inside a transaction (the entry predates it).
    prime_books(n)
    with transaction.atomic():
        hits = n("hits")
        cached_books()
        assert n("hits") == hits + 1


@pytest.mark.skipif(not POSTGRES, reason="PostgreSQL READ COMMITTED")
def test_postgres_read_committed_fills_inside_transaction(data, n):
    with transaction.atomic():
        cached_books()
        hits = n("hits")
        assert cached_books() == db_books()
        assert n("hits") == hits + 1
        assert n("fills") == 1


@pytest.mark.skipif(not POSTGRES, reason="PostgreSQL isolation levels")
def test_postgres_repeatable_read_does_not_fill_a_snapshot(data, n):
    from psycopg import IsolationLevel

    options = connection.settings_dict["OPTIONS"]
    saved = dict(options)
    connection.close()
    options["isolation_level"] = IsolationLevel.REPEATABLE_READ
    try:
        connection.ensure_connection()
        assert wrapper().isolation_level == IsolationLevel.REPEATABLE_READ
        with transaction.atomic():
            old = cached_books()  # takes the snapshot
            # Another connection commits a change: our snapshot won't see it.
            in_thread(lambda: Book.objects.filter(title="One").update(status=8))
            assert cached_books() == old  # the snapshot
            assert n("fills") == 0
        assert_no_state()
    finally:
        connection.close()
        options.clear()
        options.update(saved)
    assert cached_books() == db_books() != old


@pytest.mark.skipif(POSTGRES, reason="psycopg refuses to switch autocommit on mid-transaction")
def test_autocommit_switched_back_on_commits_and_leaves_no_state(data, n):
    # On SQLite, set_autocommit(True) with a transaction open commits it (the
    # sqlite3 module commits when isolation_level becomes None), without
    # going through connection.commit().
    old = prime_books(n)
    transaction.set_autocommit(False)
    try:
        Book.objects.filter(title="One").update(title="Uno")
        # Another connection refills the cache with the committed, pre-write rows.
        assert in_thread(cached_books) == old
    finally:
        transaction.set_autocommit(True)
    assert db_books() != old  # the write was committed
    assert cached_books() == db_books(), "stale read after an implicit commit"
    assert_no_state()


def test_written_tags_are_invalidated_just_before_and_right_after_commit(monkeypatch):
    with recorded_invalidations(monkeypatch) as events:
        with transaction.atomic():
            Author.objects.create(name="x")
            assert events and events[-1][0] == "invalidate"  # at write time
            events.clear()
    kinds = [e[0] for e in events]
    assert kinds == ["invalidate", "COMMIT", "invalidate"], events
    assert "testapp_author" in events[0][1] and "testapp_author" in events[2][1]


# -- RuntimeHandle.deferred: a write's own transaction, one invalidation ------------------


def handle():
    from querystash import RuntimeHandle, _runtime

    return RuntimeHandle(_runtime.current)


@contextmanager
def recorded_invalidations(monkeypatch):
    """The invalidations sent and the COMMITs, in order, as ``events``: the
    core's own deletions and those that also read keys (a plugin's, which
    may carry the core's tags: querystash-fields' after a COMMIT)."""
    from querystash import _stamps

    events = []
    real_invalidate = _stamps.invalidate
    real_reading = _stamps.invalidate_reading

    def invalidate(rt, tags, model=""):
        events.append(("invalidate", frozenset(tags)))
        return real_invalidate(rt, tags, model)

    def invalidate_reading(rt, tags, keys):
        events.append(("invalidate", frozenset(tags)))
        return real_reading(rt, tags, keys)

    monkeypatch.setattr(_stamps, "invalidate_reading", invalidate_reading)

    conn = connections["default"]
    real_commit = type(conn)._commit

    def _commit(self):
        events.append(("COMMIT",))
        return real_commit(self)

    monkeypatch.setattr(_stamps, "invalidate", invalidate)
    monkeypatch.setattr(type(conn), "_commit", _commit)
    yield events


def deferred_write(forget=False):
    """A write in a transaction of its own inside ``deferred``; another
    connection fills the cache with the committed (old) rows meanwhile."""
    with handle().deferred(DEFAULT_DB_ALIAS) as pending:
        assert pending is not None
        with transaction.atomic():
            Book.objects.filter(title="One").update(status=5)
            seen = in_thread(cached_books)
        pending.add("plugin-tag")
        if forget:
            pending.clear()  # the planted bug: the block's one invalidation drops the write
    return seen


def test_deferred_invalidates_once_after_its_commit(data, n, monkeypatch):
    old = prime_books(n)
    with recorded_invalidations(monkeypatch) as events:
        seen = deferred_write()
    assert seen == old  # filled during the transaction, with the committed rows
    assert [e[0] for e in events] == ["COMMIT", "invalidate"], events
    assert {"testapp_book", "plugin-tag"} <= events[1][1]
    assert_no_state()
    assert cached_books() == db_books() != old  # that fill died after the COMMIT
    assert_hits_again(n)


def test_positive_control_deferred_without_its_invalidation_serves_stale_rows(data, n):
    # The test above must be able to fail: a block that loses the write's
    # tags (no invalidation at the statement, before or after COMMIT) leaves
    # the fill made during the transaction alive.
    old = prime_books(n)
    deferred_write(forget=True)
    assert db_books() != old
    assert cached_books() == old


def test_deferred_rolled_back_still_invalidates(data, n, monkeypatch):
    prime_books(n)
    with recorded_invalidations(monkeypatch) as events, pytest.raises(ZeroDivisionError):
        with handle().deferred(DEFAULT_DB_ALIAS), transaction.atomic():
            Book.objects.filter(title="One").update(status=6)
            1 / 0  # noqa: B018
    assert events == [("invalidate", frozenset(events[0][1]))]
    assert "testapp_book" in events[0][1]
    assert_no_state()
    assert cached_books() == db_books()


def test_deferred_inside_a_transaction_changes_nothing(data, n, monkeypatch):
    old = prime_books(n)
    with recorded_invalidations(monkeypatch) as events:
        with transaction.atomic():
            with handle().deferred(DEFAULT_DB_ALIAS) as pending:
                assert pending is None
                Book.objects.filter(title="One").update(status=7)
            assert events and events[-1][0] == "invalidate"  # at the statement, as always
            events.clear()
    assert [e[0] for e in events] == ["invalidate", "COMMIT", "invalidate"], events
    assert cached_books() == db_books() != old


def test_deferred_autocommit_write_invalidates_at_exit(data, n, monkeypatch):
    old = prime_books(n)
    with recorded_invalidations(monkeypatch) as events:
        with handle().deferred(DEFAULT_DB_ALIAS) as pending:
            Book.objects.filter(title="One").update(status=8)
            assert events == []
            pending.add("plugin-tag")
    assert len(events) == 1 and {"testapp_book", "plugin-tag"} <= events[0][1]
    assert cached_books() == db_books() != old


def held_write(forget=False):
    """A write inside ``deferred(in_open_transaction=True)`` in an open
    transaction; the plugin adds a tag to what the block holds."""
    conn = connections["default"]
    with handle().deferred(DEFAULT_DB_ALIAS, in_open_transaction=True) as pending:
        assert pending is not None
        Book.objects.filter(title="One").update(status=9)
        # read-your-writes from the statement on, though nothing was sent yet
        assert "testapp_book" in handle().written_tags(DEFAULT_DB_ALIAS)
        assert "testapp_book" in pending
        pending.add("plugin-tag")
        if forget:
            pending.clear()  # the planted bug: the held invalidation is dropped
    return conn


def test_deferred_in_an_open_transaction_holds_the_statement_until_exit(
        data, n, monkeypatch):
    old = prime_books(n)
    with recorded_invalidations(monkeypatch) as events:
        with transaction.atomic():
            held_write()
            # one invalidation at the block's exit, before the COMMIT: the
            # statement's tags and the plugin's together
            assert [e[0] for e in events] == ["invalidate"], events
            assert {"testapp_book", "plugin-tag"} <= events[0][1]
            assert "plugin-tag" in handle().written_tags(DEFAULT_DB_ALIAS)
            assert cached_books() == db_books() != old  # reads its writes
            events.clear()
    # the transaction's rules otherwise: again before and after the COMMIT
    assert [e[0] for e in events] == ["invalidate", "COMMIT", "invalidate"], events
    assert {"testapp_book", "plugin-tag"} <= events[-1][1]
    assert_no_state()
    assert cached_books() == db_books() != old
    assert_hits_again(n)


def test_positive_control_a_dropped_held_set_loses_the_plugins_tags(data, n, monkeypatch):
    # The test above must be able to fail: a block whose held set is dropped
    # sends nothing at its exit, and the plugin's tag, known only to that
    # set, misses the COMMIT's invalidations too. The statement's own tags
    # still go then: the core recorded them at the statement.
    old = prime_books(n)
    with recorded_invalidations(monkeypatch) as events:
        with transaction.atomic():
            held_write(forget=True)
            assert events == []
    assert [e[0] for e in events] == ["invalidate", "COMMIT", "invalidate"], events
    assert "plugin-tag" not in events[-1][1] and "testapp_book" in events[-1][1]
    assert cached_books() == db_books() != old


# -- RuntimeHandle.after_commit: a plugin's part in the post-COMMIT invalidation ----------


def test_after_commit_sender_gets_the_written_tags_before_on_commit_callbacks(
        data, n, monkeypatch):
    old = prime_books(n)
    seen = []

    def send(tags, committed):
        seen.append(("send", set(tags), committed))
        handle().invalidate(DEFAULT_DB_ALIAS, tags | {"plugin-tag"}, committed=True)
        tags.clear()  # sent here, with the plugin's own: nothing left for the core

    with recorded_invalidations(monkeypatch) as events:
        with transaction.atomic():
            assert handle().after_commit(DEFAULT_DB_ALIAS, send) is True
            assert handle().after_commit(DEFAULT_DB_ALIAS, send) is True  # once only
            Book.objects.filter(title="One").update(status=11)
            transaction.on_commit(lambda: seen.append(("on_commit", cached_books())))
            events.clear()
    assert [s[0] for s in seen] == ["send", "on_commit"], seen
    assert "testapp_book" in seen[0][1] and seen[0][2] is True
    # before the COMMIT the core's; after it the sender's one call, nothing more
    assert [e[0] for e in events] == ["invalidate", "COMMIT", "invalidate"], events
    assert {"testapp_book", "plugin-tag"} <= events[-1][1]
    assert seen[1][1] == db_books() != old  # the callback read fresh rows
    assert cached_books() == db_books()
    assert_no_state()


def test_after_commit_sender_is_told_of_a_rollback(data, n):
    prime_books(n)
    seen = []
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        handle().after_commit(DEFAULT_DB_ALIAS, lambda tags, ok: seen.append((set(tags), ok)))
        Book.objects.filter(title="One").update(status=12)
        1 / 0  # noqa: B018
    assert seen == [(set(), False)]
    assert cached_books() == db_books()
    assert_no_state()


def test_after_commit_outside_a_transaction_does_nothing(data):
    assert handle().after_commit(DEFAULT_DB_ALIAS, lambda tags, ok: 1 / 0) is False
    Book.objects.filter(title="One").update(status=13)  # nothing registered to call
    assert_no_state()


@contextmanager
def fill_just_before_commit(monkeypatch):
    """Another connection fills the cache with the committed (old) rows after
    the pre-COMMIT invalidation, before the COMMIT: only the post-COMMIT
    invalidation can kill that entry."""
    conn = connections["default"]
    real_commit = type(conn)._commit
    filled = []

    def _commit(self):
        filled.append(in_thread(cached_books))
        return real_commit(self)

    monkeypatch.setattr(type(conn), "_commit", _commit)
    yield filled


def sender_write(monkeypatch, send):
    with fill_just_before_commit(monkeypatch) as filled, transaction.atomic():
        handle().after_commit(DEFAULT_DB_ALIAS, send)
        Book.objects.filter(title="One").update(status=14)
    return filled


def test_after_commit_sender_that_raises_leaves_the_tags_to_the_core(data, n, monkeypatch):
    old = prime_books(n)

    def send(tags, committed):
        raise RuntimeError("plugin bug")

    assert sender_write(monkeypatch, send) == [old]  # filled with the old rows
    assert cached_books() == db_books() != old  # that fill died after the COMMIT
    assert_no_state()


def test_positive_control_a_sender_that_takes_the_tags_and_sends_nothing_is_stale(
        data, n, monkeypatch):
    # The test above must be able to fail: a sender that removes the tags
    # from the set without sending them leaves the fill made just before the
    # COMMIT alive.
    old = prime_books(n)

    def send(tags, committed):
        tags.clear()  # the planted bug

    assert sender_write(monkeypatch, send) == [old]
    assert db_books() != old
    assert cached_books() == old  # stale
