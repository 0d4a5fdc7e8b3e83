"""Django signals (``querystash.signals``): each is sent with the right
arguments, and with no receiver connected no signal work is done at all —
counted, not timed."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

import querystash
from querystash import _observe, _runtime, signals
from tests.helpers import counting
from tests.test_verify import plant_stale_entry
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

ALL = ("cache_hit", "cache_miss", "cache_fill", "cache_invalidated", "cache_stale")


@pytest.fixture
def book():
    author = Author.objects.create(name="Le Guin")
    return Book.objects.create(title="The Dispossessed", author=author)


class Receiver:
    def __init__(self):
        self.calls = []

    def __call__(self, sender, **kwargs):
        self.calls.append((sender, kwargs))


@pytest.fixture
def received():
    """{signal name: Receiver}, every signal connected for the test."""
    receivers = {name: Receiver() for name in ALL}
    for name, receiver in receivers.items():
        getattr(signals, name).connect(receiver)
    yield receivers
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)
    assert signals.dispatch not in _runtime.current.observers


def read(pk):
    return list(Book.objects.filter(pk=pk).values_list("title", flat=True))


def test_the_signals_are_public():
    for name in ALL:
        assert getattr(querystash, name) is getattr(signals, name)


def test_miss_fill_hit_and_invalidation_are_sent_with_their_arguments(book, received):
    read(book.pk)
    [(sender, miss)] = received["cache_miss"].calls
    assert sender is Book and miss["label"] == "testapp.Book"
    assert miss["tags"][-1] == "*" and miss["key"]
    [(sender, fill)] = received["cache_fill"].calls
    assert sender is Book and fill["key"] == miss["key"] and fill["tags"] == miss["tags"]
    assert received["cache_hit"].calls == []

    read(book.pk)
    [(sender, hit)] = received["cache_hit"].calls
    assert sender is Book and hit["key"] == miss["key"]
    assert hit["event"].kind == "hit"

    Book.objects.filter(pk=book.pk).update(title="The Lathe of Heaven")
    sent = received["cache_invalidated"].calls
    assert sent and sent[0][0] is None
    assert any(t.startswith("testapp_book") for t in sent[0][1]["tags"])


def test_stale_is_sent_in_verify_mode(received):
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "VERIFY": 1.0}):
        pk = plant_stale_entry()  # a write below Django: the entry is stale
        Author.objects.get(pk=pk)
    [(sender, stale)] = received["cache_stale"].calls
    assert sender is Author and stale["label"] == "testapp.Author"
    assert stale["key"] == received["cache_hit"].calls[-1][1]["key"]


def test_a_receiver_for_one_model_only(book):
    got = []

    def only_authors(sender, **kwargs):
        got.append(sender)

    signals.cache_miss.connect(only_authors, sender=Author)
    try:
        read(book.pk)
        list(Author.objects.all())
    finally:
        signals.cache_miss.disconnect(only_authors, sender=Author)
    assert got == [Author]


def count_signal_work(monkeypatch) -> dict:
    """Counters of every step signals could cost: events built and sent to
    observers, the dispatcher, Signal.send, the recorder hand-off."""
    counted = {"emit": 0, "dispatch": 0, "send": 0, "reading": 0}

    monkeypatch.setattr(_runtime.Runtime, "emit", counting(counted, "emit", _runtime.Runtime.emit))
    monkeypatch.setattr(signals, "dispatch", counting(counted, "dispatch", signals.dispatch))
    for name in ALL:
        signal = getattr(signals, name)
        monkeypatch.setattr(signal, "send", counting(counted, "send", signal.send))
    monkeypatch.setattr(_observe, "reading", counting(counted, "reading", _observe.reading))
    return counted


def workload(book):
    read(book.pk)  # miss + fill
    read(book.pk)  # hit
    read(book.pk)  # hit
    Book.objects.filter(pk=book.pk).update(title="x")  # invalidation


def test_nothing_connected_means_no_signal_work(book, monkeypatch):
    counted = count_signal_work(monkeypatch)
    assert _runtime.current.observers == []
    workload(book)
    assert counted == {"emit": 0, "dispatch": 0, "send": 0, "reading": 0}


def test_connect_then_disconnect_leaves_no_signal_work(book, monkeypatch):
    """Positive control of the count above: connected, the same workload
    costs events and sends; disconnected again, nothing."""
    counted = count_signal_work(monkeypatch)  # before connect(): it watches the counter
    receiver = Receiver()
    signals.cache_hit.connect(receiver)
    try:
        workload(book)
        assert counted["emit"] >= 4 and counted["dispatch"] >= 4 and counted["reading"] == 3
        assert counted["send"] == 2 and len(receiver.calls) == 2
    finally:
        signals.cache_hit.disconnect(receiver)
    assert _runtime.current.observers == []
    counted.update(dict.fromkeys(counted, 0))
    workload(book)
    assert counted == {"emit": 0, "dispatch": 0, "send": 0, "reading": 0}


def test_a_rebuild_keeps_the_dispatcher_while_connected(book):
    receiver = Receiver()
    signals.cache_miss.connect(receiver)
    try:
        with override_settings(QUERYSTASH={**settings.QUERYSTASH}):  # a new runtime
            assert signals.dispatch in _runtime.current.observers
            read(book.pk)
        assert receiver.calls
    finally:
        signals.cache_miss.disconnect(receiver)
    assert signals.dispatch not in _runtime.current.observers
