"""What a related manager's write costs the store, counted on real redis and memcached.

``add()``, ``remove()``, ``clear()`` and ``set()`` run in a transaction of
Django's own. Called outside any transaction, the plugin has
querystash-fields settle it once, right after the COMMIT
(``capture.batch``): one store call for the statements' tags and the rows'
field tags. Inside the caller's ``atomic()`` the usual per-statement
rules apply. Calls are counted, not timed; every read is checked against
the database.
"""

from __future__ import annotations

import os
import sys

import pytest
from django.conf import settings
from django.db import transaction
from django.db.models.signals import m2m_changed
from django.test import override_settings

from querystash.testing import runtime
from querystash.testing import store_calls as recorded
from tests.testapp.models import Author, Book, Tag

sys.path.insert(0, os.path.dirname(__file__))
from querystash_m2m_reads import pks  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

@pytest.fixture(params=["redis_cache_alias", "memcached_cache_alias"])
def rt(request):
    alias = request.getfixturevalue(request.param)
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "django": {"cache": alias}}):
        yield runtime()


def tags_of(book, cached=True):
    manager = Book(pk=book.pk).tags
    return pks((manager.all() if cached else manager.nocache()).order_by("pk"))


def books_of(tag, cached=True):
    manager = Tag(pk=tag.pk).books
    return pks((manager.all() if cached else manager.nocache()).order_by("pk"))


@pytest.fixture
def shelf():
    ann = Author.objects.create(name="Ann")
    b1, b2 = (Book.objects.create(title=f"b{i}", author=ann) for i in (1, 2))
    t1, t2, t3 = (Tag.objects.create(name=f"t{i}") for i in (1, 2, 3))
    b1.tags.add(t1)
    b2.tags.add(t2)
    return b1, b2, t1, t2, t3


def primed(*reads):
    """Each read cached, and a hit the second time."""
    for read in reads:
        read()
        read()


WRITES = {
    "add": lambda b1, b2, t1, t2, t3: b1.tags.add(t2, t3),
    "add_reverse": lambda b1, b2, t1, t2, t3: t3.books.add(b1, b2),
    "remove": lambda b1, b2, t1, t2, t3: b1.tags.remove(t1),
    "clear": lambda b1, b2, t1, t2, t3: b1.tags.clear(),
    "set": lambda b1, b2, t1, t2, t3: b1.tags.set([t2, t3]),
    "set_clear": lambda b1, b2, t1, t2, t3: b1.tags.set([t3], clear=True),
}


@pytest.mark.parametrize("write", WRITES, ids=list(WRITES))
def test_a_related_write_is_one_store_call(rt, shelf, write):
    b1, b2, t1, t2, t3 = shelf
    reads = [lambda b=b: tags_of(b) for b in (b1, b2)] + \
        [lambda t=t: books_of(t) for t in (t1, t2, t3)]
    primed(*reads)
    # The process learns the slots' schemes from a first write (the field
    # tags sent are those of the schemes it last found there)
    b2.tags.remove(t2)
    b2.tags.add(t2)
    primed(*reads)
    with recorded(rt.storage) as calls:
        WRITES[write](*shelf)
    assert len(calls) == 1, calls.names
    for b in (b1, b2):
        assert tags_of(b) == tags_of(b, cached=False)
    for t in (t1, t2, t3):
        assert books_of(t) == books_of(t, cached=False)


def test_inside_the_callers_transaction_the_usual_rules_apply(rt, shelf):
    b1, b2, t1, t2, t3 = shelf
    primed(lambda: tags_of(b1))
    with recorded(rt.storage) as calls, transaction.atomic():
        b1.tags.add(t2)
        assert tags_of(b1) == [t1.pk, t2.pk]  # read-your-writes, inside the transaction
    assert len(calls) > 1, calls.names
    assert tags_of(b1) == [t1.pk, t2.pk]


@pytest.fixture
def receivers(shelf):
    """An m2m_changed receiver reading the book's tags (cached) right after
    each add, inside Django's transaction, and again in an on_commit callback."""
    inside, after_commit = [], []

    def receiver(sender, instance, action, **kwargs):
        if action == "post_add" and isinstance(instance, Book):
            inside.append(tags_of(instance))
            transaction.on_commit(lambda: after_commit.append(tags_of(instance)))

    m2m_changed.connect(receiver, sender=Book.tags.through)
    try:
        yield inside, after_commit
    finally:
        m2m_changed.disconnect(receiver, sender=Book.tags.through)


def test_a_receiver_reads_what_the_write_wrote(rt, shelf, receivers):
    """Inside the transaction (read-your-writes) and in an on_commit callback
    (the one store call comes first among them), with the write still one call."""
    b1, b2, t1, t2, t3 = shelf
    primed(lambda: tags_of(b1))
    b2.tags.add(t1)  # the process learns the slots' schemes
    for seen in receivers:
        seen.clear()
    primed(lambda: tags_of(b1))
    with recorded(rt.storage) as calls:
        b1.tags.add(t3)
    assert receivers == ([[t1.pk, t3.pk]], [[t1.pk, t3.pk]])
    # the write's one call; then the callback's read (a miss, and its fill)
    assert calls.names[0] == "delete_get_many" and "delete_many" not in calls.names, calls
    assert tags_of(b1) == [t1.pk, t3.pk]


def test_control_field_tags_for_written_tables_serve_the_receiver_stale_rows(
        rt, shelf, receivers, monkeypatch):
    """Positive control for the check above: with the strategy blind to what
    the open transaction wrote (so it tags the receiver's read by field, as
    outside it), the receiver is served the entry from before the add."""
    from querystash import RuntimeHandle

    b1, b2, t1, t2, t3 = shelf
    primed(lambda: tags_of(b1))
    monkeypatch.setattr(RuntimeHandle, "written_tags", lambda self, alias: None)
    b1.tags.add(t3)
    assert receivers[0] == [[t1.pk]]  # stale: what tagging by table there prevents


def test_control_invalidating_after_the_on_commit_callbacks_serves_them_stale_rows(
        rt, shelf, receivers, monkeypatch):
    """Positive control: the batch's call sent when the block exits (after
    the on_commit callbacks) instead of first among them."""
    from querystash_fields import _capture

    send = _capture._Batch.send
    hooked = []

    def late(self):
        if not hooked:  # the on_commit callback: ignored, so the exit sends
            hooked.append(self)
            return
        send(self)

    monkeypatch.setattr(_capture._Batch, "send", late)
    b1, b2, t1, t2, t3 = shelf
    primed(lambda: tags_of(b1))
    b1.tags.add(t3)
    assert receivers[1] == [[t1.pk]]  # stale in the callback
    assert tags_of(b1) == [t1.pk, t3.pk]  # sent at the exit: right after it
