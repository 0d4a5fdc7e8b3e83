"""Two processes on one database and one redis: one reads, the other writes.

The reader registers its scheme in the shared store; the writer (this
process) never read that query, yet its saves invalidate exactly the
entries they change — also after the reader's slot was taken by another
scheme and the reader moved to another slot.
"""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings
from querystash_fields._schemes import decode

from querystash.testing import runtime
from tests.testapp.models import Author, Book

sys.path.insert(0, os.path.dirname(__file__))
import querystash_fields_worker  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

SPAWN = multiprocessing.get_context("spawn")
SCHEME = ("author_id", "status")


@pytest.fixture
def shared_store(redis_cache_alias, redis_server):
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "django": {"cache": "redis"}}):
        yield connection.settings_dict["NAME"], redis_server.url


def slots() -> dict[str, tuple[str, ...] | None]:
    rt = runtime()
    tags = [f"testapp_book!s{i}" for i in range(16)]
    values = rt.storage.get_many([rt.stamp_key(t) for t in tags])
    return {t: decode(v) for t, v in zip(tags, values, strict=True) if v is not None}


def save(book, **changes):
    book = Book.objects.nocache().get(pk=book.pk)
    for name, value in changes.items():
        setattr(book, name, value)
    book.save()


def test_writer_process_sees_the_readers_scheme(shared_store):
    db_name, redis_url = shared_store
    ann, bob = Author.objects.create(name="Ann"), Author.objects.create(name="Bob")
    kept = Book.objects.create(title="kept", author=ann, status=2)
    other = Book.objects.create(title="other", author=bob, status=2)
    moving = Book.objects.create(title="moving", author=ann, status=1)
    late = Book.objects.create(title="late", author=ann, status=1)

    def lose_the_slot():
        # The reader's slot is evicted and another scheme registered in it
        # (here by this process's own read, which takes the first free slot).
        rt = runtime()
        (slot,) = [t for t, scheme in slots().items() if scheme == SCHEME]
        rt.storage.delete_many([rt.stamp_key(slot)])
        list(Book.objects.cache().filter(status=1).values_list("pk"))
        assert slots()[slot] == ("status",)

    steps = [
        lambda: save(other, title="other!"),  # bob's book: can't change ann's list
        lambda: save(moving, status=2),  # moves into the reader's filter
        lose_the_slot,
        lambda: save(late, status=2),  # routed through the reader's new slot
        lambda: save(other, title="other!!"),  # still field-scoped there
    ]
    ready, go, out = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(target=querystash_fields_worker.reader,
                          args=(db_name, redis_url, ann.pk, len(steps) + 1, ready, go, out))
    child.start()
    try:
        for step in steps:
            assert ready.wait(60), "the reader did not finish its round"
            ready.clear()
            step()
            go.set()
        assert ready.wait(60)
        go.set()
        results = out.get(timeout=60)
    finally:
        go.set()
        child.join(60)
    assert child.exitcode == 0
    assert all(fresh for _, _, fresh in results), results
    hits = [hit for _, hit, _ in results]
    assert hits == [1, 1, 0, 0, 0, 1], results
    assert results[2][0] == [(kept.pk, "kept"), (moving.pk, "moving")]
    assert len(results[4][0]) == 3
    assert sorted(slots().values()) == [SCHEME, ("status",)]
