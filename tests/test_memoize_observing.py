"""Memoized calls as observers see them: ``memo_*`` events and signals
(hit, miss then fill, veto with its reason, bypass), the DEBUG log line, the
debug-toolbar panel (each call's row, and the queries a call's miss ran,
listed as reads of that call with their SQL and tags) — and, with nothing
observing, no observing work at all (counted, not timed)."""

from __future__ import annotations

import logging
import re
from html import unescape
from types import SimpleNamespace

import pytest
from django.db import connection
from django.template import Context, Engine

import querystash
from querystash import _capture, _capture_reads, _explain, _observe, _runtime, signals
from tests.helpers import counting
from tests.memo_cases import raw_count, shelf_of
from tests.test_debug_toolbar import open_panel, rows, toolbar_settings
from tests.test_memoize import configured
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

MEMO = ("memo_hit", "memo_miss", "memo_fill", "memo_veto", "memo_bypass")
#: the per-query signals: a memoized miss's queries must send none of them
PER_QUERY = ("cache_hit", "cache_miss", "cache_fill")
SHELF = shelf_of.querystash_memoized
RAW = raw_count.querystash_memoized


@querystash.memoize
def echo(value):
    return 1


@querystash.memoize
def bookcase(author_id):
    """A memoized call around another one, with a query of its own."""
    return shelf_of(author_id), Book.objects.count()


@querystash.memoize
async def async_shelf(author_id):
    return [b.title async for b in Book.objects.filter(author_id=author_id).order_by("pk")]


@pytest.fixture(params=["locmem", "redis", "memcached"])
def store(request):
    alias = "default" if request.param == "locmem" else \
        request.getfixturevalue(f"{request.param}_cache_alias")
    with configured(alias, "per-query") as rt:  # the models are cached per query too
        yield rt


@pytest.fixture
def author():
    author = Author.objects.create(name="Le Guin")
    Book.objects.create(title="The Dispossessed", author=author)
    Book.objects.create(title="The Word for World Is Forest", author=author)
    return author


@pytest.fixture
def told():
    """Every memo_* and per-query hit/miss/fill signal, into one list, in order."""
    seen: list[SimpleNamespace] = []
    receivers = {}
    for name in MEMO + PER_QUERY:
        def receiver(sender, name=name, **kwargs):
            seen.append(SimpleNamespace(name=name, sender=sender, **kwargs))
        receivers[name] = receiver
        getattr(signals, name).connect(receiver)
    yield seen
    for name, receiver in receivers.items():
        getattr(signals, name).disconnect(receiver)
    assert signals.dispatch not in _runtime.current.observers


def names(seen) -> list[str]:
    return [s.name for s in seen]


# -- events and signals ----------------------------------------------------------------


def test_miss_and_fill_then_hit_in_order(store, author, told):
    assert shelf_of(author.pk)[0] == "Le Guin"
    # the miss's two queries went through the capture: no per-query signal
    assert names(told) == ["memo_miss", "memo_fill"]
    miss, fill = told
    for sent in (miss, fill):
        assert sent.sender is None and sent.label == SHELF and sent.event.model == SHELF
        assert sent.event.kind == sent.name
    assert miss.key and fill.key == miss.key and miss.tags == ()
    assert any(t.startswith("testapp_book") for t in fill.tags)
    assert any(t.startswith("testapp_author") for t in fill.tags)

    told.clear()
    shelf_of(author.pk)
    [hit] = told
    assert (hit.name, hit.label, hit.key, hit.tags) == ("memo_hit", SHELF, fill.key, fill.tags)

    told.clear()
    Book.objects.create(title="Lavinia", author=author)  # a write to what it read
    assert "Lavinia" in shelf_of(author.pk)[1]
    assert names(told) == ["memo_miss", "memo_fill"]


def test_a_veto_carries_its_reason(store, author, told):
    raw_count()
    assert names(told) == ["memo_miss", "memo_veto"]
    veto = told[1]
    assert veto.label == RAW and veto.key == told[0].key
    assert veto.event.reason == _capture.RAW_READ == "raw SQL read"
    assert querystash.memoize_stats()[RAW]["veto: raw SQL read"] == 1

    told.clear()
    echo(object())  # an argument with no exact encoding: vetoed before it runs
    [veto] = told
    assert veto.name == "memo_veto" and veto.key == ""
    assert veto.event.reason.startswith("unencodable argument")
    assert querystash.memoize_stats()[echo.querystash_memoized]["vetoed"] == 1


def test_a_bypass_carries_its_reason_code(store, author, told):
    with querystash.disabled():
        shelf_of(author.pk)
    assert names(told) == ["memo_bypass"]
    assert told[0].event.reason == "disabled" and told[0].label == SHELF


def test_nested_calls_and_a_fragment(store, author, told):
    bookcase(author.pk)
    assert [(s.name, s.label) for s in told] == [
        ("memo_miss", bookcase.querystash_memoized), ("memo_miss", SHELF),
        ("memo_fill", SHELF), ("memo_fill", bookcase.querystash_memoized)]

    told.clear()
    engine = Engine(libraries={"querystash": "querystash.templatetags.querystash"})
    template = engine.from_string('{% load querystash %}{% memoize "shelf" pk %}'
                                  "{{ books.count }}{% endmemoize %}")
    context = {"pk": author.pk, "books": Book.objects.filter(author=author)}
    assert template.render(Context(context)) == template.render(Context(context)) == "2"
    assert [(s.name, s.label) for s in told] == [
        ("memo_miss", "template:shelf"), ("memo_fill", "template:shelf"),
        ("memo_hit", "template:shelf")]


def test_async_calls_are_told_too(store, author, told):
    from asgiref.sync import async_to_sync

    run = async_to_sync(async_shelf)
    assert run(author.pk) == run(author.pk)
    assert names(told) == ["memo_miss", "memo_fill", "memo_hit"]


def test_the_debug_log_says_why_a_call_was_not_stored(store, author, caplog):
    caplog.set_level(logging.DEBUG, logger="querystash")
    raw_count()
    with querystash.disabled():
        shelf_of(author.pk)
    lines = [r.getMessage() for r in caplog.records if "memo_" in r.getMessage()]
    assert lines == [f"querystash: memo_veto {RAW}: raw SQL read",
                     f"querystash: memo_bypass {SHELF}: disabled "
                     f"({querystash.REASONS['disabled']})"]


# -- with nothing observing -------------------------------------------------------------


def count_observing_work(monkeypatch) -> dict:
    """Counters of every way memoize could reach an observer."""
    counted = {"emit": 0, "observed": 0, "memo_read": 0, "memo_skipped": 0}

    monkeypatch.setattr(_runtime.Runtime, "emit", counting(counted, "emit", _runtime.Runtime.emit))
    monkeypatch.setattr(_capture_reads, "_observed",
                        counting(counted, "observed", _capture_reads._observed))
    monkeypatch.setattr(_observe, "memo_read", counting(counted, "memo_read", _observe.memo_read))
    monkeypatch.setattr(_observe, "memo_skipped",
                        counting(counted, "memo_skipped", _observe.memo_skipped))
    return counted


def workload(author):
    shelf_of(author.pk)  # miss + fill: two queries through the capture
    shelf_of(author.pk)  # hit
    shelf_of(author.pk)  # hit
    raw_count()  # miss + veto: one ORM query
    with querystash.disabled():
        shelf_of(author.pk)  # bypass


def test_nothing_observing_means_no_observing_work(store, author, monkeypatch):
    counted = count_observing_work(monkeypatch)
    assert _runtime.current.observers == []
    workload(author)
    assert counted == {"emit": 0, "observed": 0, "memo_read": 0, "memo_skipped": 0}
    assert querystash.memoize_stats()[SHELF] == {"misses": 1, "fills": 1, "hits": 2,
                                                 "bypasses": 1}


def test_observing_work_is_counted_when_something_observes(store, author, monkeypatch):
    """Positive control of the count above: the same workload, observed by a
    signal and then by a recorder, enters each counted path."""
    counted = count_observing_work(monkeypatch)
    hits = []

    def receiver(sender, **kwargs):
        hits.append(kwargs["label"])

    signals.memo_hit.connect(receiver)
    try:
        workload(author)
    finally:
        signals.memo_hit.disconnect(receiver)
    assert hits == [SHELF, SHELF]
    # memo: miss, fill, hit, hit, miss, veto, bypass; and the bypassed call's
    # two queries, each a per-query bypass. The queries of a miss only reach
    # a recorder: none runs here.
    assert counted == {"emit": 9, "observed": 3, "memo_read": 0, "memo_skipped": 2}

    querystash.invalidate_all()
    counted.update(dict.fromkeys(counted, 0))
    with _explain.recorded():
        workload(author)
    assert counted["memo_read"] == 3 and counted["emit"] >= 7
    assert _runtime.current.observers == []


def test_a_hit_tests_the_observers_once(store, author, monkeypatch):
    """The hit path's whole observing cost: one read of ``rt.observers``."""
    shelf_of(author.pk)
    reads = []

    class Counted:  # a data descriptor: it wins over the instance's attribute
        def __get__(self, rt, owner):
            reads.append(1)
            return rt.__dict__["observers"]

        def __set__(self, rt, value):
            rt.__dict__["observers"] = value

    monkeypatch.setattr(_runtime.Runtime, "observers", Counted(), raising=False)
    hits = querystash.memoize_stats()[SHELF].get("hits", 0)
    shelf_of(author.pk)
    assert querystash.memoize_stats()[SHELF]["hits"] == hits + 1
    assert len(reads) == 1


# -- the recorder and the panel ---------------------------------------------------------


def recorded(fn) -> _observe.Recorder:
    with _explain.recorded() as recorder:
        fn()
    return recorder


def test_a_lookups_start_is_taken_by_the_event_that_answers_it():
    """A bypassed lookup (the store out) is not the start of a later hit of
    its key: that hit, told no lookup of its own, has no time."""
    from querystash.events import Event

    recorder = _observe.Recorder()
    token = _observe.recording.set(recorder)
    try:
        _observe.memo_looking("k")
        for kind, reason in (("memo_bypass", "store-out"), ("memo_miss", ""),
                             ("memo_veto", "store unavailable"), ("memo_hit", "")):
            recorder.memo_event(Event(kind, "f", "k", reason=reason))
    finally:
        _observe.recording.reset(token)
    bypassed, hit = recorder.calls
    assert (bypassed.outcome, bypassed.seconds is not None) == ("bypass", True)
    assert (hit.outcome, hit.seconds) == ("hit", None)


def test_the_recorder_files_each_read_under_its_call(store, author):
    recorder = recorded(lambda: bookcase(author.pk))
    outer, inner = recorder.calls
    assert (outer.label, outer.outcome, outer.filled, outer.reads) == \
        (bookcase.querystash_memoized, "miss", True, 1)
    assert (inner.label, inner.outcome, inner.filled, inner.reads) == (SHELF, "miss", True, 2)
    assert [(r.outcome, r.call, r.memo, r.label) for r in recorder.reads] == [
        ("memo", 2, SHELF, "testapp.Author"), ("memo", 2, SHELF, "testapp.Book"),
        ("memo", 1, bookcase.querystash_memoized, "testapp.Book")]
    for read in recorder.reads:
        table = "testapp_" + read.label.split(".")[1].lower()
        assert f'FROM "{table}"' in read.sql and not read.key
        assert read.tags[-1] == "*" and any(t.startswith(table) for t in read.tags)

    again = recorded(lambda: bookcase(author.pk))
    [call] = again.calls
    assert (call.outcome, call.label, call.reads) == ("hit", bookcase.querystash_memoized, 0)
    assert call.saved == outer.seconds  # the miss time of its key, from the first recording
    assert call.seconds is not None and call.seconds > 0  # the hit's own time, its lookup
    assert again.reads == []

    vetoed = recorded(raw_count)
    [call] = vetoed.calls
    assert (call.outcome, call.reason, call.reads) == ("veto", "raw SQL read", 1)
    assert vetoed.reads[0].outcome == "memo" and vetoed.reads[0].reason == ""


def test_the_read_that_vetoes_a_call_says_so(store, author):
    def nocache():
        shelf_of.__wrapped__(author.pk)  # unmemoized: its reads are bookcase's
        return list(Book.objects.nocache().filter(author=author))

    wrapped = querystash.memoize(nocache, name="tests.nocache")
    recorder = recorded(wrapped)
    [call] = recorder.calls
    assert (call.outcome, call.reason) == ("veto", _capture.NOCACHE)
    assert [r.reason for r in recorder.reads] == ["", "", _capture.NOCACHE]
    assert "nocache" in str(querystash.explain(wrapped))  # explain() words it too


@pytest.fixture
def toolbar(store):
    with toolbar_settings():
        yield


READ_ROW = re.compile(
    r'<tr class="qs-row" data-outcome="(\w+)" data-reason="[^"]*"'
    r'(?: data-call="(\d*)" data-memo="([^"]*)")?>(.*?)</tr>\s*'
    r'(?:<tr class="qs-sql"><td></td><td colspan="6"><code>(.*?)</code>)?', re.S)
CALL_ROW = re.compile(r'<tr class="qs-call" data-outcome="(\w+)" data-reason="([^"]*)" '
                      r'data-label="([^"]*)">')


def memo_reads(content: str) -> list[tuple[str, str, str, str]]:
    """(call number, label, the row's text, SQL) of each read listed as a memoized call's."""
    return [(m[1], m[2], m[3], m[4]) for m in READ_ROW.findall(unescape(content))
            if m[0] == "memo"]


def assert_memo_reads_listed(content: str, call: str, label: str, tables: list[str]) -> None:
    """The panel lists a read of call ``call`` for each of ``tables``, in order,
    with its SQL and its tags."""
    listed = [(sql, text) for number, memo, text, sql in memo_reads(content)
              if (number, memo) == (call, label)]
    assert len(listed) == len(tables), memo_reads(content)
    for (sql, text), table in zip(listed, tables, strict=True):
        assert f'FROM "{table}"' in sql and table in text  # the SQL, and the tags


def test_the_panel_shows_memoized_calls_and_their_reads(toolbar, client, author):
    first = client.get(f"/memo/{author.pk}/")
    content = unescape(open_panel(client, first))
    assert CALL_ROW.findall(content) == [("fill", "", SHELF)]
    assert_memo_reads_listed(content, "1", SHELF, ["testapp_author", "testapp_book"])
    # the memoized call's reads are neither per-query hits nor misses
    assert [outcome for outcome, _ in rows(content)] == ["memo", "memo", "fill"]
    assert "1 memoized call: 0 hits, 1 miss filled, 0 vetoed" in " ".join(content.split())
    assert "1 memoized (0 hits)" in first.content.decode()  # the toolbar's nav subtitle

    second = client.get(f"/memo/{author.pk}/", {"veto": "1"})
    content = unescape(open_panel(client, second))
    assert CALL_ROW.findall(content) == [("hit", "", SHELF), ("veto", "raw SQL read", RAW)]
    assert memo_reads(content)[0][:2] == ("2", RAW)
    assert_memo_reads_listed(content, "2", RAW, ["testapp_book"])
    assert [outcome for outcome, _ in rows(content)] == ["hit", "memo"]


def test_the_panel_check_catches_missing_reads(toolbar, client, author, monkeypatch):
    """Positive control: with the hand-off to the recorder planted out, the
    check above fails."""
    monkeypatch.setattr(_observe, "memo_read", lambda *args, **kwargs: None)
    content = unescape(open_panel(client, client.get(f"/memo/{author.pk}/")))
    assert CALL_ROW.findall(content) == [("fill", "", SHELF)]  # the call itself still shows
    with pytest.raises(AssertionError):
        assert_memo_reads_listed(content, "1", SHELF, ["testapp_author", "testapp_book"])


def test_no_query_is_left_out_of_the_panel(toolbar, client, author):
    """Every query the view ran on the database is a row of the panel."""
    ran = []

    def counting(execute, sql, params, many, context):
        ran.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(counting):
        response = client.get(f"/memo/{author.pk}/")
    content = unescape(open_panel(client, response))
    listed = [m[4] for m in READ_ROW.findall(content) if m[4]]
    assert [sql for sql in ran if "testapp_" in sql] == listed and len(listed) == 3
