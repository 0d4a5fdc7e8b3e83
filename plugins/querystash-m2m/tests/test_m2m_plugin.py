"""The plugin around the operations: a positive control, switching it (and
querystash-fields) off, reversibility, transactions, generic relations, and a
"list with tags" page served from the cache."""

from __future__ import annotations

import os
import sys

import pytest
from django.db import connection, transaction
from django.db.models import Prefetch
from django.db.models.fields import related_descriptors
from django.db.models.sql.compiler import SQLDeleteCompiler
from querystash_m2m import _rows, _state

from querystash.testing import rebuild, uninstalled
from tests.testapp.models import Author, Book, Tag

sys.path.insert(0, os.path.dirname(__file__))
from querystash_m2m_reads import Note, Person, Read, content_type, mgr, pks  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["fields", "table"])
def mode(request, settings):
    if request.param == "table":
        settings.QUERYSTASH = {**settings.QUERYSTASH, "DISABLED_PLUGINS": ["fields"]}
    rebuild()
    return request.param


@pytest.fixture
def books():
    ann = Author.objects.create(name="Ann")
    b1, b2 = (Book.objects.create(title=f"b{i}", author=ann) for i in (1, 2))
    t1, t2 = (Tag.objects.create(name=f"t{i}") for i in (1, 2))
    b1.tags.add(t1, t2)
    b2.tags.add(t2)
    return b1, b2, t1, t2


def tags_of(book):
    return lambda c: pks(mgr(Book(pk=book.pk).tags, c).all())


def count_of(book):
    return lambda c: mgr(Book(pk=book.pk).tags, c).count()


# -- a test that can fail -----------------------------------------------------------


def test_positive_control_wrong_deleted_rows_is_stale(settings, books, counts, monkeypatch):
    """Told the wrong rows (another book's), querystash-fields keeps the
    entry of the book whose row was really deleted: the check catches it."""
    rebuild()
    b1, b2, t1, _ = books
    read = Read("b1", tags_of(b1), counts).prime()
    real = _rows.returned

    def lie(conn, fields, rows):
        return [{**row, "book_id": b2.pk} for row in real(conn, fields, rows)]

    monkeypatch.setattr(_rows, "returned", lie)
    b1.tags.remove(t1)
    with pytest.raises(AssertionError, match="stale"):
        read.check()


def test_positive_control_wrong_inserted_rows_is_stale(books, counts, monkeypatch):
    rebuild()
    b1, b2, t1, _ = books
    read = Read("b2", count_of(b2), counts).prime()
    monkeypatch.setattr(_rows, "inserted", lambda model, obj: {"book_id": b1.pk,
                                                               "tag_id": obj.tag_id})
    b2.tags.add(t1)
    with pytest.raises(AssertionError, match="stale"):
        read.check()


# -- switched off, uninstalled, without querystash-fields ---------------------------------


@pytest.mark.parametrize("disabled", [["m2m"], ["m2m", "fields"]])
def test_plugin_disabled_is_still_right(settings, books, counts, disabled):
    settings.QUERYSTASH = {**settings.QUERYSTASH, "DISABLED_PLUGINS": disabled}
    rebuild()
    assert not _state.active()
    b1, b2, t1, t2 = books
    reads = [Read(n, f, counts).prime() for n, f in (("b1", tags_of(b1)), ("b2", tags_of(b2)))]
    b1.tags.remove(t1)
    b2.tags.add(t1)
    for read in reads:
        read.fresh()
    before = counts().get("hits", 0)
    for _ in range(2):
        assert Book(pk=b1.pk).tags.count() == 1  # the through model: Django's query, uncached
    assert counts().get("hits", 0) == before


def test_without_querystash_fields(books, counts, monkeypatch):
    """querystash-fields not installed: the core's table-level tags apply."""
    rebuild()
    monkeypatch.setattr(_state, "capture", None)
    b1, b2, t1, _ = books
    reads = [Read("b1", tags_of(b1), counts).prime(), Read("c2", count_of(b2), counts).prime()]
    b1.tags.remove(t1)
    Book(pk=b2.pk).tags.clear()
    for read in reads:
        read.fresh()


def test_uninstall_restores_django(books):
    originals = (vars(SQLDeleteCompiler).get("execute_sql"),
                 related_descriptors.create_forward_many_to_many_manager)
    with uninstalled():
        assert "execute_sql" not in vars(SQLDeleteCompiler)
        assert not hasattr(related_descriptors.create_forward_many_to_many_manager,
                           "__querystash_original__")
        b1, _, t1, _ = books
        b1.tags.remove(t1)  # plain Django
        assert "_Precise" not in [c.__name__ for c in type(b1.tags).__mro__]
    assert vars(SQLDeleteCompiler).get("execute_sql") is not originals[0]
    assert "_Precise" in [c.__name__ for c in type(books[0].tags).__mro__]


# -- transactions --------------------------------------------------------------------


def test_inside_atomic(mode, books, counts):
    b1, b2, t1, _ = books
    r1 = Read("b1", tags_of(b1), counts).prime()
    r2 = Read("c2", count_of(b2), counts).prime()
    with transaction.atomic():
        b1.tags.remove(t1)
        assert tags_of(b1)(True) == tags_of(b1)(False)  # read-your-writes
    r1.fresh()
    if mode == "fields":
        r2.hit()


def test_rollback(mode, books, counts):
    b1, _, t1, _ = books
    r1 = Read("b1", tags_of(b1), counts).prime()
    with pytest.raises(RuntimeError), transaction.atomic():
        b1.tags.remove(t1)
        b1.tags.add(Tag.objects.create(name="t3"))
        raise RuntimeError
    assert r1.check() in (True, False)  # right either way


def test_autocommit_off(mode, books, counts):
    """No atomic() (so no on_commit): the plugin leaves the statement to the
    core and querystash-fields' family, recorded until the commit."""
    b1, b2, t1, _ = books
    r1 = Read("b1", tags_of(b1), counts).prime()
    transaction.set_autocommit(False)
    try:
        b1.tags.remove(t1)
        transaction.commit()
    finally:
        transaction.set_autocommit(True)
    r1.fresh()


# -- the page: a list with tags, from the cache --------------------------------------


def page(cached):
    base = Book.objects.cache() if cached else Book.objects.nocache()
    return [(b.title, [t.name for t in b.tags.all()], b.tags.count())
            for b in base.order_by("pk").prefetch_related(Prefetch("tags",
                                                                   Tag.objects.order_by("pk")))]


def test_list_with_tags_served_from_cache(mode, books, django_assert_num_queries):
    b1, _, t1, _ = books
    first = page(True)
    with django_assert_num_queries(0):
        assert page(True) == first
    Book(pk=b1.pk).tags.remove(t1)
    assert page(True) == page(False) != first
    with django_assert_num_queries(0):
        page(True)


def test_reverse_prefetch_and_counts_cached(mode, books, counts):
    _, b2, t1, t2 = books

    def tag_page(cached):
        base = Tag.objects.cache() if cached else Tag.objects.nocache()
        return [(t.name, sorted(b.title for b in t.books.all()), mgr(t.books, cached).count())
                for t in base.order_by("pk").prefetch_related("books")]

    read = Read("tags", tag_page, counts).prime()
    t1.books.add(b2)
    read.fresh()


# -- generic relations: ordinary reads of ordinary tables ----------------------------


@pytest.fixture
def people():
    p1, p2 = Person.objects.create(name="p1"), Person.objects.create(name="p2")
    ct = content_type(Person)
    Note.objects.create(content_type=ct, object_id=p1.pk, text="n1")
    Note.objects.create(content_type=ct, object_id=p2.pk, text="n2")
    return p1, p2


def notes_page(cached):
    base = Person.objects.cache() if cached else Person.objects.nocache()
    return [(p.name, sorted(n.text for n in p.notes.all()))
            for p in base.order_by("pk").prefetch_related("notes")]


def targets_page(cached):
    base = Note.objects.cache() if cached else Note.objects.nocache()
    return [(n.text, n.target.name) for n in base.order_by("pk").prefetch_related("target")]


def test_generic_relation_prefetch(mode, people, counts):
    p1, _ = people
    read = Read("notes", notes_page, counts).prime()
    assert read.queries == 2  # persons, then their notes: both cached
    Note.objects.create(content_type=content_type(Person), object_id=p1.pk, text="n3")
    read.fresh()
    read = Read("notes", notes_page, counts).prime()
    Note.objects.filter(text="n3").delete()
    read.fresh()


def test_generic_foreign_key_prefetch(mode, people, counts):
    p1, _ = people
    read = Read("targets", targets_page, counts).prime()
    assert read.queries == 2  # notes, then one query per content type
    Person.objects.filter(pk=p1.pk).update(name="renamed")
    read.fresh()
    read = Read("targets", targets_page, counts).prime()
    note = Note.objects.get(text="n2")
    note.object_id = p1.pk
    note.save()
    read.fresh()


def test_connection_is_left_clean(mode, books):
    b1, _, t1, _ = books
    b1.tags.clear()
    assert connection.get_autocommit()


# -- settings ------------------------------------------------------------------------


def test_related_counts_off(settings, books, counts):
    settings.QUERYSTASH = {**settings.QUERYSTASH, "m2m": {"related_counts": False}}
    b1 = books[0]
    before = counts().get("hits", 0)
    for _ in range(2):
        assert Book(pk=b1.pk).tags.count() == 2
    assert counts().get("hits", 0) == before


def test_more_rows_than_max_rows_is_the_family(settings, books, counts):
    settings.QUERYSTASH = {**settings.QUERYSTASH, "m2m": {"max_rows": 1}}
    b1, b2, t1, t2 = books
    other = Read("c2", count_of(b2), counts).prime()
    b1.tags.clear()  # two rows: more than max_rows
    other.fresh()
    other = Read("c2", count_of(b2), counts).prime()
    b1.tags.add(t1)  # one row: precise
    other.hit()
