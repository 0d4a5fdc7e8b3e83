"""The scheme registry under eviction and contention.

A read depends on the slot registering its scheme as on a stamp pinned to
that registration (``stamp_value``): these tests evict slots and hand them
to other schemes at the protocol's named points (``querystash.testing.at_checkpoint``),
as the store and other processes could.
"""

from __future__ import annotations

from contextlib import ExitStack
from decimal import Decimal

import pytest
from querystash_fields._schemes import decode, encode
from querystash_fields.strategy import FieldStrategy

from querystash.testing import at_checkpoint, counters, runtime
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

SLOTS = [f"testapp_book!s{i}" for i in range(16)]
OTHER = ("status",)  # another scheme of the same table


@pytest.fixture
def data():
    ann = Author.objects.create(name="Ann")
    bob = Author.objects.create(name="Bob")
    for title, author, status in [("a1", ann, 2), ("a2", ann, 1), ("b1", bob, 2),
                                  ("b2", bob, 1)]:
        Book.objects.create(title=title, author=author, status=status, price=Decimal(1))
    return ann, bob


@pytest.fixture(autouse=True)
def fresh_registry():
    """Each test starts from an empty store: forget the slots chosen before."""
    registry = fields_strategy().registry
    registry.mine.clear()
    registry.full_until.clear()
    registry.generation += 1


def fields_strategy() -> FieldStrategy:
    (strategy,) = [s for s in runtime().strategies if isinstance(s, FieldStrategy)]
    return strategy


@pytest.fixture
def checkpoint():
    """``checkpoint(name, action)``: run ``action`` once at the named point."""
    with ExitStack() as stack:
        yield lambda name, action: stack.enter_context(at_checkpoint(name, action))


def slots() -> dict[str, bytes]:
    rt = runtime()
    values = rt.storage.get_many([rt.stamp_key(t) for t in SLOTS])
    return {t: v for t, v in zip(SLOTS, values, strict=True) if v is not None}


def evict(tag: str) -> None:
    rt = runtime()
    rt.storage.delete_many([rt.stamp_key(tag)])


def take(tag: str, scheme=OTHER) -> None:
    """Another process registers ``scheme`` in a free (or just evicted) slot."""
    rt = runtime()
    evict(tag)
    assert not rt.storage.add_many({rt.stamp_key(tag): encode(scheme)}, 60)


def by_author(author, status=2):
    def fn(cached):
        base = Book.objects.cache() if cached else Book.objects.nocache()
        return sorted(base.filter(author=author, status=status).values_list("pk", "title"))
    return fn


class Counter:
    def __init__(self, counts):
        self.counts = counts

    def __call__(self, name):
        return self.counts("testapp.Book").get(name, 0)

    def delta(self, fn):
        """(result of ``fn(True)``, hits, fills) it caused; checks it is fresh."""
        hits, fills = self("hits"), self("fills")
        got = fn(True)
        assert got == fn(False), "stale read"
        return got, self("hits") - hits, self("fills") - fills


@pytest.fixture
def c(counts):
    return Counter(counts)


def primed(c, fn):
    fn(True)
    assert c.delta(fn)[1] == 1
    (slot,) = slots()
    return slot


def pk(title):
    return Book.objects.nocache().get(title=title).pk


def touch(pk, **changes):
    book = Book.objects.nocache().get(pk=pk)
    for name, value in changes.items():
        setattr(book, name, value)
    book.save()


def test_one_registration_per_scheme(data, c):
    ann, bob = data
    slot = primed(c, by_author(ann))
    primed(c, by_author(bob))  # same scheme: same slot, adopted
    assert decode(slots()[slot]) == ("author_id", "status")


def test_slot_evicted_between_stamp_read_and_fill(data, c, checkpoint):
    ann, _ = data
    fn = by_author(ann)
    slot = primed(c, fn)
    touch(pk("a1"), title="a1!")  # a miss next
    checkpoint("after_stamp_read", lambda: evict(slot))
    # Filled under the registration its stamp read found, which is gone: the
    # slot can never hold that value again (a missing slot always gets a new
    # one), so the entry is dead at birth...
    assert c.delta(fn)[1:] == (0, 1)
    assert c.delta(fn)[1:] == (0, 1)  # ...this read misses: registered anew, filled
    assert c.delta(fn)[1:] == (1, 0)


def test_slot_evicted_after_the_fill_never_revives(data, c, checkpoint):
    # Two entries filled under one registration; the slot is lost; a write
    # that only the lost scheme could route lands meanwhile; a read
    # registers the scheme again. The other entry must not come back.
    ann, bob = data
    anns, bobs = by_author(ann), by_author(bob)
    slot = primed(c, anns)
    primed(c, bobs)
    evict(slot)
    touch(pk("b2"), status=2)  # into bob's list; no scheme seen
    assert not slots()
    assert c.delta(anns)[1:] == (0, 1)  # registers the scheme again
    assert slots().keys() == {slot}
    got, hits, _ = c.delta(bobs)
    assert hits == 0 and len(got) == 2


def test_slot_evicted_while_the_query_runs(data, c, checkpoint):
    ann, _ = data
    fn = by_author(ann)
    slot = primed(c, fn)
    touch(pk("a1"), title="a1!")
    checkpoint("before_fill", lambda: evict(slot))
    assert c.delta(fn)[1:] == (0, 1)  # filled under a registration now gone...
    assert c.delta(fn)[1:] == (0, 1)  # ...so never served: a new one
    assert c.delta(fn)[1:] == (1, 0)


def test_slot_taken_by_another_scheme(data, c):
    ann, _ = data
    fn = by_author(ann)
    slot = primed(c, fn)
    take(slot)
    assert c.delta(fn)[1:] == (0, 0)  # not filled under another scheme's slot
    assert c.delta(fn)[1:] == (0, 1)  # moved to a free slot
    assert c.delta(fn)[1:] == (1, 0)
    held = {decode(v): t for t, v in slots().items()}
    assert held.keys() == {OTHER, ("author_id", "status")} and held[OTHER] == slot
    touch(pk("a2"), status=2)
    got, hits, _ = c.delta(fn)
    assert hits == 0 and len(got) == 2


def test_slot_taken_by_another_scheme_during_the_read(data, c, checkpoint):
    ann, _ = data
    fn = by_author(ann)
    slot = primed(c, fn)
    touch(pk("a1"), title="a1!")
    checkpoint("after_stamp_read", lambda: take(slot))
    assert c.delta(fn)[1:] == (0, 1)  # filled under the lost registration: dead at birth
    assert c.delta(fn)[1:] == (0, 0)  # the slot is another scheme's: conflict, no fill
    assert c.delta(fn)[1:] == (0, 1)  # moved to a new slot
    touch(pk("a2"), status=2)  # routed by the new slot
    got, hits, _ = c.delta(fn)
    assert hits == 0 and len(got) == 2


def test_free_slot_taken_before_the_registration(data, c, checkpoint):
    # Another process registers another scheme in the free slot this read
    # chose, just after the read created it (the read's adds share its round
    # trip): the fill is made under a registration already gone, dead at
    # birth; the next read finds the other scheme there and moves on.
    ann, _ = data
    fn = by_author(ann)
    checkpoint("after_stamp_read", lambda: take("testapp_book!s0"))
    assert c.delta(fn)[1:] == (0, 1)
    checkpoint("after_stamp_read", lambda: None)
    assert c.delta(fn)[1:] == (0, 0)  # the slot holds another scheme: no fill
    assert c.delta(fn)[1:] == (0, 1)
    assert {decode(v) for v in slots().values()} == {OTHER, ("author_id", "status")}
    assert c.delta(fn)[1:] == (1, 0)


def test_garbage_in_a_slot_invalidates_the_family(data, c):
    ann, bob = data
    fn = by_author(ann)
    primed(c, fn)
    rt = runtime()
    rt.storage.add_many({rt.stamp_key("testapp_book!s5"): b"12345678"}, 60)
    touch(pk("b1"), title="b1!")  # bob's: only the family says so
    got, hits, _ = c.delta(fn)
    assert hits == 0


def test_all_slots_taken_falls_back_to_table_level(data, c):
    ann, _ = data
    for i, tag in enumerate(SLOTS):
        take(tag, (f"c{i}",))
    fn = by_author(ann)
    fn(True)
    assert c.delta(fn)[1] == 1
    touch(pk("b1"), title="b1!")  # table level: any write
    assert c.delta(fn)[1] == 0


def test_store_error_in_stamp_value_does_not_fill(data, c, monkeypatch):
    ann, _ = data
    fn = by_author(ann)
    slot = primed(c, fn)
    evict(slot)
    strategy = fields_strategy()

    def broken(rt, tag):
        raise ConnectionError("store down")
    monkeypatch.setattr(strategy.registry, "stamp_value", broken)
    before = c("errors")
    assert c.delta(fn)[1:] == (0, 0)
    assert counters().get("errors", 0) >= before + 1
