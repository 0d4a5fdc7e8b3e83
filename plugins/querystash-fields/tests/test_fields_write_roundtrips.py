"""What a ``save()`` costs the store, counted on real redis and memcached.

In autocommit a ``save()`` runs in a transaction of the plugin's own (the old
values are read under the row lock): its statement's tags and the field tags
of the row go out together, once, after that COMMIT (``RuntimeHandle.deferred``),
in the call that reads the table's scheme slots again
(``RuntimeHandle.invalidate_reading``: one round trip on redis). The field
tags sent are those of the schemes the process last found in the slots; a
scheme the read finds that was not among them is invalidated right after.
Inside the caller's ``atomic()`` the core's transaction rules apply as
before. Calls are counted, not timed.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import transaction
from django.test import override_settings

from querystash.testing import runtime
from querystash.testing import store_calls as recorded
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

@pytest.fixture(params=["redis_cache_alias", "memcached_cache_alias"])
def rt(request):
    alias = request.getfixturevalue(request.param)
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "django": {"cache": alias}}):
        yield runtime()


def anns_published(ann, cached=True):
    qs = Book.objects.cache() if cached else Book.objects.nocache()
    return list(qs.filter(author=ann, status=2).order_by("pk").values_list("title", flat=True))


@pytest.fixture
def ann():
    ann = Author.objects.create(name="Ann")
    Book.objects.create(title="a1", author=ann, status=2)
    return ann


def test_save_of_an_existing_row_is_one_call(rt, ann):
    draft = Book.objects.create(title="a2", author=ann, status=1)
    other = Book.objects.create(title="a3", author=ann, status=1)
    assert anns_published(ann) == ["a1"]  # registers the scheme (author_id, status)
    assert anns_published(ann) == ["a1"]
    draft.status = 2
    with recorded(rt.storage) as calls:
        draft.save()
    # This process had not read the slots yet: the scheme found is
    # invalidated right after the read that found it.
    assert [name for name, _ in calls] == ["delete_get_many", "delete_many"], calls
    assert anns_published(ann) == ["a1", "a2"] == anns_published(ann, cached=False)
    other.status = 2
    with recorded(rt.storage) as calls:
        other.save()
    assert [name for name, _ in calls] == ["delete_get_many"], calls
    deleted = set(calls[0][1])
    assert rt.stamp_key("testapp_book") in deleted  # the statement's own tag, in the same call
    assert any(k.startswith(rt.stamp_key("testapp_book:")) for k in deleted), deleted
    assert anns_published(ann) == ["a1", "a2", "a3"] == anns_published(ann, cached=False)


def test_positive_control_a_scheme_missing_from_the_guess_and_skipped_is_stale(
        rt, ann, monkeypatch):
    # The test above must be able to fail: a writer that trusts its guess of
    # the slots and ignores what the read after its COMMIT found leaves the
    # field tags of the read's scheme alive.
    from querystash_fields._schemes import Registry

    draft = Book.objects.create(title="a2", author=ann, status=1)
    assert anns_published(ann) == ["a1"]
    monkeypatch.setattr(Registry, "parse", lambda self, tables, values: self.last(tables))
    draft.status = 2
    draft.save()
    assert anns_published(ann, cached=False) == ["a1", "a2"]
    assert anns_published(ann) == ["a1"]  # stale


def test_save_of_a_new_row_is_one_call(rt, ann):
    assert anns_published(ann) == ["a1"]
    Book.objects.create(title="a2", author=ann, status=1)  # the slots read once
    with recorded(rt.storage) as calls:
        Book.objects.create(title="a3", author=ann, status=2)
    assert [name for name, _ in calls] == ["delete_get_many"], calls
    assert anns_published(ann) == ["a1", "a3"] == anns_published(ann, cached=False)


@contextmanager
def writing_atomic():
    """``atomic()`` in which a save can read its row's old values under lock:
    on SQLite one begun IMMEDIATE (as ``OPTIONS={"transaction_mode":
    "IMMEDIATE"}`` gives; a deferred one leaves the save to the family)."""
    from django.db import connection

    connection.ensure_connection()
    saved = getattr(connection, "transaction_mode", None)
    if connection.vendor == "sqlite":
        connection.transaction_mode = "IMMEDIATE"
    try:
        with transaction.atomic():
            yield
    finally:
        if connection.vendor == "sqlite":
            connection.transaction_mode = saved


def test_save_inside_atomic_settles_its_rows_in_the_call_that_reads_the_slots(rt, ann):
    """Inside the caller's transaction, once the process has read the slots:
    at the statement one call, the core's at-once deletion held back
    (``deferred(in_open_transaction=True)``) to go with the rows' field tags
    (the guessed schemes' tags deleted by the call that reads the slots
    again); before the COMMIT the core's deletion, and after it one call: the
    core's own deletion and the rows' settling (``after_commit``)."""
    draft = Book.objects.create(title="a2", author=ann, status=1)
    other = Book.objects.create(title="a3", author=ann, status=1)
    assert anns_published(ann) == ["a1"]  # registers the scheme (author_id, status)
    draft.status = 2
    draft.save()  # the process reads the slots
    assert anns_published(ann) == ["a1", "a2"]
    other.status = 2
    with recorded(rt.storage) as calls:
        with writing_atomic():
            other.save()
            at_statement = [name for name, _ in calls]
            # read-your-writes: the field tags were recorded as written
            assert anns_published(ann) == ["a1", "a2", "a3"]
    assert at_statement == ["delete_get_many"], calls
    # the core's own tags for the UPDATE went with it
    assert "qs:t:testapp_book" in calls[0][1], calls
    after = [name for name, _ in calls][len(at_statement):]
    assert after == ["delete_many", "delete_get_many"], calls
    assert "qs:t:testapp_book" in calls[-1][1], calls  # the core's, with the rows'
    assert anns_published(ann) == ["a1", "a2", "a3"] == anns_published(ann, cached=False)


def test_inside_atomic_a_scheme_missing_from_the_guess_is_invalidated_after_the_read(
        rt, ann, monkeypatch):
    """The guess of the slots is wrong (a scheme the process never saw): the
    call that reads the slots finds the real one, whose field tags go next."""
    from querystash_fields._schemes import Registry

    draft = Book.objects.create(title="a2", author=ann, status=1)
    assert anns_published(ann) == ["a1"]
    monkeypatch.setattr(Registry, "last", lambda self, tables: {
        t: [("unused!s9", ("id",))] for t in tables})
    draft.status = 2
    with recorded(rt.storage) as calls, writing_atomic():
        draft.save()
    # the guess's tags with the UPDATE's own, reading the slots; then the
    # tags of the scheme that read found and the guess missed
    assert [name for name, _ in calls][:2] == ["delete_get_many", "delete_many"], calls
    assert any(tag.endswith(f":author_id=i{ann.pk},status=i2") for tag in calls[1][1]), calls
    assert anns_published(ann) == ["a1", "a2"] == anns_published(ann, cached=False)


def test_positive_control_inside_atomic_a_scheme_missing_from_the_guess_is_stale(
        rt, ann, monkeypatch):
    """The test above must be able to fail: trusting the guess and ignoring
    what the slots held leaves the field tags of a scheme the guess missed."""
    from querystash_fields._schemes import Registry

    draft = Book.objects.create(title="a2", author=ann, status=1)
    assert anns_published(ann) == ["a1"]
    monkeypatch.setattr(Registry, "parse", lambda self, tables, values: self.last(tables))
    monkeypatch.setattr(Registry, "last", lambda self, tables: {
        t: [("unused!s9", ("id",))] for t in tables})  # a guess without the scheme read
    draft.status = 2
    with writing_atomic():
        draft.save()
    assert anns_published(ann, cached=False) == ["a1", "a2"]
    assert anns_published(ann) == ["a1"]  # stale


def test_save_inside_atomic_keeps_the_transaction_rules(rt, ann):
    draft = Book.objects.create(title="a2", author=ann, status=1)
    assert anns_published(ann) == ["a1"]
    draft.status = 2
    with recorded(rt.storage) as calls:
        with transaction.atomic():
            draft.save()
            at_statement = [name for name, _ in calls]
    # at the statement; then again before and after the COMMIT, the core's
    # tags each time (after it, with the rows' field tags in one call)
    assert any(name.startswith("delete") and "qs:t:testapp_book" in keys
               for name, keys in calls[:len(at_statement)]), calls
    after = calls[len(at_statement):]
    assert [name for name, _ in after] in (["delete_many", "delete_get_many"],
                                           ["delete_many", "delete_many"]), calls
    assert all("qs:t:testapp_book" in keys for _, keys in after), calls
    assert anns_published(ann) == ["a1", "a2"] == anns_published(ann, cached=False)
