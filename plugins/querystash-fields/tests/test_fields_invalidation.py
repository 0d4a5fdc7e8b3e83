"""Field-scoped invalidation: django-cachebot's README conditions, made exact.

Book plays cachebot's Photo and Author its User: ``Book.author`` is ``Photo.user``.
Each test primes a cached read (second read a hit), writes, then checks the
read is fresh (a miss equal to the database) or, for writes that cannot
change it, still a hit.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection, connections, transaction
from django.db.models import Exists, OuterRef

from querystash.testing import runtime
from tests.helpers import JOINED_UPDATE, in_thread, sends_together, update_statements
from tests.testapp.models import (
    Author,
    Badge,
    Book,
    Place,
    Restaurant,
    Review,
    Tag,
    Ticket,
)

pytestmark = pytest.mark.django_db(transaction=True)


class Read:
    def __init__(self, counts, fn, label="testapp.Book"):
        self.counts, self.fn, self.label = counts, fn, label
        self.primed = None

    def hits(self):
        return self.counts(self.label).get("hits", 0)

    def prime(self):
        first = self.fn(True)
        before = self.hits()
        assert self.fn(True) == first == self.fn(False)
        assert self.hits() == before + 1, "the second read should be a hit"
        self.primed = first
        return self

    def hit(self):
        before = self.hits()
        got = self.fn(True)
        assert self.hits() == before + 1, "a write that can't change this read invalidated it"
        assert got == self.primed == self.fn(False)

    def fresh(self, changed=True):
        before = self.hits()
        got = self.fn(True)
        truth = self.fn(False)
        assert got == truth, f"stale: cached {got!r} != database {truth!r}"
        assert self.hits() == before, "served from the cache after a write that changes it"
        if changed:
            assert truth != self.primed, "vacuous: the write did not change the result"


@pytest.fixture
def read(counts):
    def make(fn, label="testapp.Book"):
        return Read(counts, fn, label).prime()
    return make


def qs(cached, model=Book, *fields):
    return model.objects.cache(*fields) if cached else model.objects.nocache()


@pytest.fixture
def data():
    ann = Author.objects.create(name="Ann", age=30)
    bob = Author.objects.create(name="Bob", age=40)
    books = {
        "a1": Book.objects.create(title="a1", author=ann, status=2, price=Decimal("5.00")),
        "a2": Book.objects.create(title="a2", author=ann, status=1),
        "b1": Book.objects.create(title="b1", author=bob, status=2),
        "b2": Book.objects.create(title="b2", author=bob, status=1),
    }
    return {"ann": ann, "bob": bob, **books}


def ann_status2(data, *fields):
    def fn(cached):
        return list(qs(cached, Book, *fields).filter(author=data["ann"], status=2)
                    .order_by("pk").values_list("pk", "title", "status", "author_id"))
    return fn


# -- django-cachebot's README: Photo.objects.cache().filter(user=user, status=2) -------------


def test_returned_object_altered(data, read):
    r = read(ann_status2(data))
    book = Book.objects.get(pk=data["a1"].pk)
    book.title = "changed"
    book.save()
    r.fresh()


def test_photo_created_matching(data, read):
    r = read(ann_status2(data))
    Book.objects.create(title="new", author=data["ann"], status=2)
    r.fresh()


def test_photo_moved_into_the_filter(data, read):
    r = read(ann_status2(data))
    book = Book.objects.get(pk=data["a2"].pk)  # ann, status 1
    book.status = 2
    book.save()
    r.fresh()


def test_photo_moved_out_of_the_filter(data, read):
    r = read(ann_status2(data))
    other = read(lambda c: list(qs(c).filter(author=data["ann"], status=3).values_list("pk")))
    book = Book.objects.get(pk=data["a1"].pk)  # ann, status 2 -> 3
    book.status = 3
    book.save()
    r.fresh()
    other.fresh()


def test_user_changed_to_another(data, read):
    r = read(ann_status2(data))
    bobs = read(lambda c: list(qs(c).filter(author=data["bob"], status=2).values_list("pk")))
    book = Book.objects.get(pk=data["a1"].pk)
    book.author = data["bob"]
    book.save()
    r.fresh()
    bobs.fresh()


def test_photo_deleted(data, read):
    r = read(ann_status2(data))
    Book.objects.get(pk=data["a1"].pk).delete()
    r.fresh()


def test_joined_user_altered_select_related(data, read):
    def fn(cached):
        return [(b.pk, b.author.name) for b in qs(cached).select_related("author")
                .filter(author=data["ann"], status=2).order_by("pk")]
    r = read(fn)
    Author.objects.filter(pk=data["ann"].pk).update(name="Annie")
    r.fresh()


def test_joined_user_saved(data, read):
    def fn(cached):
        return [(b.pk, b.author.name) for b in qs(cached).select_related("author")
                .filter(author=data["ann"], status=2).order_by("pk")]
    r = read(fn)
    bob = Author.objects.get(pk=data["bob"].pk)
    bob.age = 41
    bob.save()  # another user: not joined by this read
    r.hit()
    ann = Author.objects.get(pk=data["ann"].pk)
    ann.name = "Annie"
    ann.save()
    r.fresh()


def test_saving_a_photo_matching_nothing_keeps_the_hit(data, read):
    r = read(ann_status2(data))
    for key in ("a2", "b1", "b2"):  # wrong status, wrong user, both
        book = Book.objects.get(pk=data[key].pk)
        book.title += "!"
        book.save()
    Book.objects.create(title="bob's", author=data["bob"], status=2)
    r.hit()


def test_field_scoped_cache_user(data, read):
    r = read(ann_status2(data, "author"))
    book = Book.objects.get(pk=data["a2"].pk)  # ann, status 1: same user, other status
    book.title = "x"
    book.save()
    r.fresh(changed=False)  # coarser: any of ann's books invalidates it
    r.primed = r.fn(False)
    r.fn(True)
    book = Book.objects.get(pk=data["b1"].pk)
    book.title = "y"
    book.save()
    r.hit()


def test_across_relations(data, read):
    # .cache("author__name").filter(author__name="Ann", status=2)
    def fn(cached):
        return list(qs(cached, Book, "author__name").filter(author__name="Ann", status=2)
                    .values_list("pk", flat=True))
    r = read(fn)
    Author.objects.create(name="Zed")
    bob = Author.objects.get(pk=data["bob"].pk)
    bob.age = 99
    bob.save()  # authors that are not Ann keep it
    r.hit()
    Book.objects.create(title="c", author=data["bob"], status=2)
    r.fresh(changed=False)  # the book table is unconditioned under this scope
    ann = Author.objects.get(pk=data["ann"].pk)
    ann.name = "Anne"
    ann.save()
    r.fresh()


def test_reverse_relation(data, read):
    Review.objects.create(book=data["a1"], score=5)

    def fn(cached):
        return list(qs(cached, Author).filter(books__status=2, books__reviews__score=5)
                    .values_list("name", flat=True))
    r = read(fn, "testapp.Author")
    book = Book.objects.get(pk=data["b2"].pk)
    book.title = "t"
    book.save()  # status 1: can't join this read
    r.hit()
    Review.objects.create(book=data["b1"], score=5)
    r.fresh()


# -- what falls back -------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda d: Book.objects.filter(status__gte=2),
    lambda d: Book.objects.exclude(status=1),
    lambda d: Book.objects.filter(status__in=list(range(1, 30))),
    lambda d: Book.objects.filter(title__startswith="a"),
])
def test_fallback_to_table_level(data, read, make):
    def fn(cached):
        base = make(data)
        return list((base.cache() if cached else base.nocache()).values_list("pk", flat=True))
    r = read(fn)
    book = Book.objects.get(pk=data["b2"].pk)
    book.price = Decimal("1.00")
    book.save()
    r.fresh(changed=False)  # any write to the table invalidates


def test_short_in_list(data, read):
    def fn(cached):
        return list(qs(cached).filter(status__in=[2, 3]).values_list("pk", flat=True))
    r = read(fn)
    book = Book.objects.get(pk=data["b2"].pk)
    book.title = "z"
    book.save()  # status 1
    r.hit()
    book.status = 3
    book.save()
    r.fresh()


def test_isnull(data, read):
    def fn(cached):
        return list(qs(cached).filter(editor__isnull=True, status=1).values_list("pk", flat=True))
    r = read(fn)
    book = Book.objects.get(pk=data["a2"].pk)
    book.editor = data["bob"]
    book.save()
    r.fresh()


def test_filter_subquery_tables_are_watched(data, read):
    def fn(cached):
        return list(qs(cached).filter(status=2, author__in=Author.objects.filter(age__gt=35))
                    .values_list("pk", flat=True))
    r = read(fn)
    Author.objects.filter(pk=data["ann"].pk).update(age=50)
    r.fresh()


def test_exists_subquery_tables_are_watched(data, read):
    def fn(cached):
        reviewed = Review.objects.filter(book=OuterRef("pk"))
        return list(qs(cached).filter(Exists(reviewed), status=2).values_list("pk", flat=True))
    r = read(fn)
    Review.objects.create(book=data["b1"], score=1)
    r.fresh()


def test_update_bulk_and_raw_fall_back_to_the_family(data, read):
    r = read(ann_status2(data))
    Book.objects.filter(pk=data["b2"].pk).update(title="q")
    r.fresh(changed=False)
    r.fn(True)
    Book.objects.bulk_update([Book(pk=data["b2"].pk, title="w", author=data["bob"])], ["title"])
    r.fresh(changed=False)
    r.fn(True)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE testapp_book SET status = 2 WHERE id = %s", [data["a2"].pk])
    r.fresh()


def test_m2m_change_invalidates_through_reads(data, read):
    tag = Tag.objects.create(name="red")

    def fn(cached):
        return list(qs(cached).filter(tags=tag).values_list("pk", flat=True))
    r = read(fn)
    data["a1"].tags.add(tag)
    r.fresh()


def test_multi_table_inheritance(read):
    pizza = Restaurant.objects.create(name="Pizza", serves_pizza=True)
    Restaurant.objects.create(name="Other", serves_pizza=False)

    def fn(cached):
        return list(qs(cached, Restaurant).filter(name="Pizza").values_list("pk", "serves_pizza"))
    r = read(fn, "testapp.Restaurant")
    Place.objects.create(name="Just a place")
    r.hit()
    pizza = Restaurant.objects.get(pk=pizza.pk)
    pizza.serves_pizza = False
    pizza.save()
    r.fresh()
    r.primed = r.fn(False)
    r.fn(True)
    Place.objects.filter(pk=pizza.pk).update(name="Pasta")
    r.fresh()


def test_get_by_pk_created_later(data, read, counts):
    from django.core.exceptions import ObjectDoesNotExist

    pk = Book.objects.order_by("-pk").first().pk + 1

    def fn(cached):
        try:
            return qs(cached).get(pk=pk).title
        except ObjectDoesNotExist:
            return None
    r = read(fn)
    Book.objects.create(title="late", author=data["ann"])
    r.fresh()


# -- stale snapshots, transactions -------------------------------------------------------------


def test_row_changed_since_it_was_loaded(data, read):
    stale = Book.objects.get(pk=data["a2"].pk)  # loaded with status 1
    Book.objects.filter(pk=data["a2"].pk).update(status=2)  # changed elsewhere
    r = read(ann_status2(data))  # includes a2 now
    stale.status = 3
    stale.save()  # the loaded old value (1) is wrong: must not leave a2 in the cache
    r.fresh()


def test_save_inside_atomic_and_rollback(data, read):
    r = read(ann_status2(data))
    with transaction.atomic():
        book = Book.objects.get(pk=data["a2"].pk)
        book.status = 2
        book.save()
        assert len(ann_status2(data)(True)) == 2  # read-your-writes
    r.fresh()
    r.primed = r.fn(False)
    r.fn(True)
    try:
        with transaction.atomic():
            book = Book.objects.get(pk=data["b1"].pk)
            book.author = data["ann"]
            book.save()
            raise RuntimeError
    except RuntimeError:
        pass
    assert r.fn(True) == r.fn(False)
    book.refresh_from_db()
    book.status = 2
    book.save()  # snapshot from the rolled-back save is wrong; still correct
    assert r.fn(True) == r.fn(False)


def test_scheme_registered_during_a_transaction(data, counts):
    # A writer that read the slots before a scheme existed re-reads them
    # after its commit: the reader's entry, filled mid-transaction, dies.
    fn = ann_status2(data, "status")
    with transaction.atomic():
        book = Book.objects.get(pk=data["a2"].pk)
        book.status = 2
        book.save()
        in_thread(lambda: fn(True))  # registers the scheme, fills old rows
    assert fn(True) == fn(False)


def test_on_commit_callback_reads_a_scheme_registered_during_the_transaction_fresh(
        data, counts):
    # The rows are settled after the COMMIT with the core's own deletion
    # (RuntimeHandle.after_commit), before any on_commit callback: one
    # reading the entry filled mid-transaction reads it dead.
    fn = ann_status2(data, "status")
    seen = []
    with transaction.atomic():
        book = Book.objects.get(pk=data["a2"].pk)
        book.status = 2
        book.save()
        in_thread(lambda: fn(True))  # registers the scheme, fills old rows
        transaction.on_commit(lambda: seen.append((fn(True), fn(False))))
    assert len(seen) == 1 and seen[0][0] == seen[0][1], seen
    assert fn(True) == fn(False)


def test_lost_slot_is_a_miss_and_self_heals(data, read):
    r = read(ann_status2(data))
    rt = runtime()
    slot = next(t for t in [f"testapp_book!s{i}" for i in range(16)]
                if rt.storage.get_many([rt.stamp_key(t)])[0] is not None)
    rt.storage.delete_many([rt.stamp_key(slot)])
    r.fresh(changed=False)
    r.hit()  # registered again
    book = Book.objects.get(pk=data["a2"].pk)
    book.status = 2
    book.save()
    r.fresh()


def _update_sql(settings, book, title, plugin_on):
    from django.test.utils import CaptureQueriesContext

    if not plugin_on:
        settings.QUERYSTASH = {**settings.QUERYSTASH, "DISABLED_PLUGINS": ["fields"]}
    book.title = title
    with CaptureQueriesContext(connection) as ctx:
        book.save()
    # Django's UPDATE, sent alone or after the old-values read in one message
    return update_statements(ctx.captured_queries)


def _one_message_saves_only() -> None:
    if not sends_together():
        pytest.skip("the one-message save: PostgreSQL with psycopg 3, client-side binding")


def _primed_after_a_first_save(data, read):
    """Ann's status-2 read, primed and still a hit after a save of Bob's book
    (no old or new value of Ann's) that compiled the old-values read: the
    next save of that book is sent as one message. (read, book)"""
    r = read(ann_status2(data))
    book = Book.objects.get(pk=data["b2"].pk)
    book.save()
    r.hit()
    return r, book


def test_save_keeps_djangos_update_statement(data, read, settings):
    """The plugin reads old values separately: Django's UPDATE is unchanged
    (same SQL as without the plugin, one UPDATE), and the hit survives."""
    r = read(ann_status2(data))
    book = Book.objects.get(pk=data["b2"].pk)
    _update_sql(settings, book, "compiles the read", True)
    with_plugin = _update_sql(settings, book, "same statement", True)
    r.hit()
    without = _update_sql(settings, book, "same statement", False)
    assert len(with_plugin) == 1 and with_plugin == without


def test_old_values_are_read_holding_the_row(data, settings):
    """Autocommit: the old values are read in one transaction with the
    UPDATE, holding the row (FOR UPDATE) or the database (BEGIN IMMEDIATE)."""
    from django.test.utils import CaptureQueriesContext
    from querystash_fields import _capture

    # the first save of a model on a connection compiles the read
    connections[connection.alias].__dict__.pop(_capture._READS, None)
    book = Book.objects.get(pk=data["b2"].pk)
    book.status = 3
    with CaptureQueriesContext(connection) as ctx:
        book.save()
    sql = [q["sql"] for q in ctx.captured_queries]
    kinds = [s.split()[0] for s in sql]
    assert kinds == ["BEGIN", "SELECT", "UPDATE", "COMMIT"], sql
    if sends_together():
        # Then the read goes in front of Django's UPDATE, in one message:
        # its implicit transaction holds the row from the read to the UPDATE.
        book.status = 4
        with CaptureQueriesContext(connection) as ctx:
            book.save()
        (sent,) = [q["sql"] for q in ctx.captured_queries]
        assert sent.startswith("SELECT ") and JOINED_UPDATE in sent, sent
        assert connection.get_autocommit() and not connection.in_atomic_block
        assert Book.objects.nocache().get(pk=book.pk).status == 4
    if connection.vendor == "sqlite":
        assert sql[0] == "BEGIN IMMEDIATE"
        connection.close()  # a save that opens the connection begins IMMEDIATE too
        book.status = 4
        with CaptureQueriesContext(connection) as ctx:
            book.save()
        assert ctx.captured_queries[0]["sql"] == "BEGIN IMMEDIATE"
    else:
        # the lock Django's UPDATE of non-key columns takes itself
        assert sql[1].rstrip().endswith("FOR NO KEY UPDATE"), sql[1]


def test_saving_a_row_another_transaction_references_does_not_wait(data):
    """An open transaction that inserted a row referencing the book, its
    foreign key checked, holds FOR KEY SHARE on the book. Django's UPDATE of
    the book takes FOR NO KEY UPDATE, which does not conflict, so the save
    goes through at once; the old-values read must lock no more than that.
    (With FOR UPDATE it waited here, and concurrent writes deadlocked.)"""
    if connection.vendor != "postgresql":
        pytest.skip("row-lock modes: PostgreSQL's")
    import psycopg

    s = connection.settings_dict
    other = psycopg.connect(host=s["HOST"], port=s["PORT"] or 5432, user=s["USER"],
                            password=s["PASSWORD"] or None, dbname=s["NAME"])
    try:
        # Django's foreign keys are DEFERRABLE INITIALLY DEFERRED: checked
        # at COMMIT, or at once when the transaction says so.
        other.execute("SET CONSTRAINTS ALL IMMEDIATE")
        other.execute(f"INSERT INTO {Review._meta.db_table} (book_id, score) VALUES (%s, 1)",
                      (data["b2"].pk,))  # uncommitted: holds FOR KEY SHARE on the book
        book = Book.objects.get(pk=data["b2"].pk)
        book.status = 3
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        try:
            book.save()  # no lock wait: a timeout would raise OperationalError
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = 0")
        assert Book.objects.nocache().get(pk=book.pk).status == 3
    finally:
        other.rollback()
        other.close()


def _old_author_read_while_another_moves_the_book(data) -> int:
    """Another transaction holding the row moves Bob's book to Ann; a save of
    the book (its title), started meanwhile on another connection, sends its
    read with the UPDATE, then that COMMIT lets it go on. The author its
    old-values read gave."""
    import threading
    import time

    import psycopg
    from django.test.utils import CaptureQueriesContext
    from querystash_fields import _capture

    book = Book.objects.get(pk=data["b2"].pk)  # Bob's
    seen = []
    first_row = _capture._first_row

    def recording(fields, rows):
        found = first_row(fields, rows)
        seen.append(found)
        return found

    def save():
        # This thread's connection compiles the read at its first save of a
        # book (another row: the one held would wait here).
        Book.objects.get(pk=data["a1"].pk).save()
        _capture._first_row = recording
        try:
            book.title = "saved while held"
            started.set()
            with CaptureQueriesContext(connection) as ctx:
                book.save()
        finally:
            _capture._first_row = first_row
        return [q["sql"] for q in ctx.captured_queries]

    s = connection.settings_dict
    other = psycopg.connect(host=s["HOST"], port=s["PORT"] or 5432, user=s["USER"],
                            password=s["PASSWORD"] or None, dbname=s["NAME"])
    sent = []
    try:
        other.execute(f"UPDATE {Book._meta.db_table} SET author_id = %s WHERE id = %s",
                      (data["ann"].pk, book.pk))  # uncommitted: holds the row
        started = threading.Event()
        done = threading.Thread(target=lambda: sent.extend(in_thread(save)))
        done.start()
        started.wait(10)
        time.sleep(0.5)  # the save is now waiting for the row
        other.commit()
        done.join(30)
    finally:
        other.rollback()
        other.close()
    assert len(sent) == 1 and "; UPDATE " in sent[0], sent  # the one-message save
    stored = Book.objects.nocache().get(pk=book.pk)
    # Django's UPDATE writes every field of the instance: Bob, loaded, is back.
    assert (stored.title, stored.author_id) == ("saved while held", data["bob"].pk)
    (row,) = seen
    return row["author_id"]


def test_the_read_sent_with_the_update_waits_for_the_rows_lock(data):
    """The old values are those the UPDATE overwrites, also with the read
    sent in front of it: the save waits for the other transaction's COMMIT
    and reads Ann, so Ann's tags and Bob's (the new value) are invalidated."""
    _one_message_saves_only()
    assert _old_author_read_while_another_moves_the_book(data) == data["ann"].pk


def test_positive_control_a_read_sent_without_the_lock_gives_values_the_update_never_saw(
        data, monkeypatch):
    """The check above can fail: the read sent without ``FOR NO KEY UPDATE``
    does not wait and gives Bob, so Ann's tags would keep rows the save moved."""
    _one_message_saves_only()
    from querystash_fields import _capture

    known = _capture._known_read

    def unlocked(*args):
        read = known(*args)
        if read is None:
            return None
        sql = read.sql.replace(" FOR NO KEY UPDATE", "")
        assert sql != read.sql
        return _capture._OldRead(sql, read.compiler, read.converters)

    monkeypatch.setattr(_capture, "_known_read", unlocked)
    assert _old_author_read_while_another_moves_the_book(data) == data["bob"].pk


def test_a_cursor_not_known_to_send_both_runs_the_update_alone(data, read, monkeypatch):
    """A backend whose cursor is not psycopg's client-side-binding one (a
    wrapper of its own): Django's UPDATE goes alone, as without the plugin,
    nothing read; its old values unknown, every query on the table is
    invalidated, and the save succeeds."""
    _one_message_saves_only()
    from django.test.utils import CaptureQueriesContext
    from querystash_fields import _capture

    r, book = _primed_after_a_first_save(data, read)
    monkeypatch.setattr(_capture, "_client_cursor", lambda: type("Other", (), {}))
    book.status = 2
    with CaptureQueriesContext(connection) as ctx:
        book.save()
    (sent,) = [q["sql"] for q in ctx.captured_queries]
    assert sent.startswith("UPDATE "), sent
    assert Book.objects.nocache().get(pk=book.pk).status == 2
    r.fresh(changed=False)  # the family: a miss, though Ann's rows did not change


def test_an_update_result_missing_behind_the_read_never_fails_the_save(data, read, monkeypatch):
    """Were the UPDATE's result not found behind the read's (``nextset()``
    false), the statement has run: the save goes through, its old values
    unknown, and every query on the table is invalidated."""
    _one_message_saves_only()
    r, book = _primed_after_a_first_save(data, read)
    with connection.cursor() as cursor:
        psycopg_cursor = type(cursor.cursor)
    monkeypatch.setattr(psycopg_cursor, "nextset", lambda self: None)
    book.status = 2
    book.save()
    monkeypatch.undo()
    assert Book.objects.nocache().get(pk=book.pk).status == 2
    r.fresh(changed=False)  # the family


#: models keyed by something else than an integer: their old values are
#: read by the key all the same (``_KEY_FIELDS``)
_KEYED = {
    "uuid": (Ticket, lambda n: {}),  # UUIDField, its default a uuid4
    # CharField; a quote and a placeholder in the key: it travels as a
    # parameter, in the UPDATE's message too, never as SQL
    "char": (Badge, lambda n: {"code": f"it's {n}%s"}),
}


@pytest.mark.parametrize("key", sorted(_KEYED))
def test_a_row_keyed_by_a_uuid_or_a_string_moved_to_another_author_is_invalidated(
        data, read, key):
    """A UUID or a CharField primary key: the old values are read by it (on
    PostgreSQL with psycopg 3, compiled once and sent with Django's UPDATE,
    as an integer key's), so moving a row from Ann to Bob invalidates Ann's
    read, and not the reads its old and new values are not in."""
    from django.test.utils import CaptureQueriesContext

    model, pk = _KEYED[key]
    label = model._meta.label
    ann, bob = data["ann"], data["bob"]
    moving = model.objects.create(author=ann, status=2, **pk(1))
    model.objects.create(author=ann, status=2, **pk(2))
    other = model.objects.create(author=ann, status=1, **pk(3))
    model.objects.create(author=bob, status=1, **pk(4))

    def rows(author, status):
        def fn(cached):
            return sorted(str(pk) for pk in qs(cached, model).filter(author=author, status=status)
                          .values_list("pk", flat=True))
        return fn

    r = read(rows(ann, 2), label)
    kept = read(rows(bob, 1), label)  # neither the old values nor the new
    model.objects.get(pk=other.pk).save()  # compiles the read; Ann's status-1 tag only
    r.hit()
    loaded = model.objects.get(pk=moving.pk)
    loaded.author = bob
    with CaptureQueriesContext(connection) as ctx:
        loaded.save()
    if sends_together():
        (sent,) = [q["sql"] for q in ctx.captured_queries]
        assert sent.startswith("SELECT ") and JOINED_UPDATE in sent, sent
    r.fresh()
    kept.hit()  # the row's old values were known: not the table's family


def test_plugin_disabled_is_table_level(data, counts, settings):
    settings.QUERYSTASH = {**settings.QUERYSTASH, "DISABLED_PLUGINS": ["fields"]}
    r = Read(counts, ann_status2(data)).prime()
    book = Book.objects.get(pk=data["b2"].pk)
    book.title = "t"
    book.save()
    r.fresh(changed=False)


def test_a_row_the_old_values_read_missed_is_invalidated(data, read, monkeypatch):
    """The old-values read finds no row, and the UPDATE changes one (a row
    inserted in between): its old values are unknown, so every query on the
    table is invalidated, never none."""
    from querystash_fields import _capture

    r = read(ann_status2(data))
    book = Book.objects.get(pk=data["a2"].pk)  # ann, status 1
    book.save()  # compiles the read: the next save sends it with the UPDATE, where it can
    # Both ways of reading the old values (apart, or in front of the UPDATE) give them here.
    monkeypatch.setattr(_capture, "_first_row", lambda *args: None)
    book.status = 2
    book.save()
    r.fresh()
