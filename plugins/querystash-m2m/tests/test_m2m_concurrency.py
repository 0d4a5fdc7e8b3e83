"""clear() while another connection adds: the rows a DELETE removed are read
from the DELETE itself (RETURNING), so a row added concurrently is either
deleted and reported, or kept: no cached read may disagree with the
database afterwards."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from django.db import connections

from querystash.testing import rebuild
from tests.testapp.models import Author, Book, Tag

sys.path.insert(0, os.path.dirname(__file__))
from querystash_m2m_reads import mgr, pks  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 30


def test_clear_races_add(counts):
    if connections["default"].vendor != "postgresql":
        pytest.skip("SQLite serialises writers: no interleaving to test")
    rebuild()
    ann = Author.objects.create(name="Ann")
    book, other = (Book.objects.create(title=t, author=ann) for t in ("b", "other"))
    tags = [Tag.objects.create(name=f"t{i}") for i in range(ROUNDS)]
    other.tags.add(*tags)
    stop = threading.Event()
    errors: list[BaseException] = []

    def adder():
        try:
            i = 0
            while not stop.is_set():
                Book(pk=book.pk, author_id=ann.pk).tags.add(tags[i % ROUNDS].pk)
                i += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    def reads():
        return [
            (lambda c: pks(mgr(Book(pk=book.pk).tags, c).all())),
            (lambda c: mgr(Book(pk=book.pk).tags, c).count()),
            (lambda c: pks(mgr(Tag(pk=tags[0].pk).books, c).all())),
        ]

    thread = threading.Thread(target=adder)
    thread.start()
    try:
        for _ in range(ROUNDS):
            for read in reads():
                read(True)  # fill while the adder runs
            Book(pk=book.pk).tags.clear()
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    for read in reads():
        assert read(True) == read(False)
    # other's rows were never touched: its reads are still answered by the cache
    before = counts().get("hits", 0)
    for _ in range(2):
        pks(other.tags.all())
    assert counts().get("hits", 0) == before + 1
