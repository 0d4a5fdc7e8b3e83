"""``querystash.explain()``, reason codes and the DEBUG log line: every reason
code has a read that gets it (tests/observe_cases.py), and explain() reports
what the read path decided, not a guess of its own."""

from __future__ import annotations

import logging

import pytest
from django.db import connection

import querystash
from querystash import _reads, _reasons, _runtime
from tests.observe_cases import CASES, MORE, make_data, snapshot_expected
from tests.testapp.models import Book

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def book():
    return make_data()


def test_every_reason_code_has_a_case():
    assert set(CASES) == set(querystash.REASONS)
    assert all(querystash.REASONS[code] for code in querystash.REASONS)


def test_every_reason_code_is_documented():
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "observing.md").read_text()
    for code in querystash.REASONS:
        assert f"| `{code}` | {_reasons.kind(code) if code not in ('snapshot', 'empty') else ''}" \
            in page, code


@pytest.mark.parametrize("code", sorted(CASES))
def test_explain_names_the_reason(book, code):
    connection.ensure_connection()
    expected = snapshot_expected() if code == _reasons.SNAPSHOT else code
    seen = querystash.explain(CASES[code])
    assert seen.reason == expected, str(seen)
    if code == _reasons.EMPTY:
        assert seen.outcome == "none" and seen.reads == []
        return
    read = seen.reads[0]
    if code == _reasons.SNAPSHOT:
        assert read.outcome == "miss" and read.filled is (not expected)
    else:
        assert read.outcome == _reasons.kind(code)
        assert not seen.cached
    assert seen.words == (querystash.REASONS[expected] if expected else "")
    assert expected in str(seen)


@pytest.mark.parametrize("name", sorted(MORE))
def test_more_reads_with_a_reason(book, name):
    code, read = MORE[name]
    assert querystash.explain(read).reason == code


def test_details_say_which_relation_check_and_parameter(book):
    assert "qs_observe_temp" in querystash.explain(CASES[_reasons.UNWATCHED]).detail
    assert "check" in querystash.explain(CASES[_reasons.INELIGIBLE]).detail
    assert "Opaque" in querystash.explain(CASES[_reasons.UNKEYED]).detail


def test_a_cached_read_is_a_miss_and_fill_then_a_hit_with_its_key_and_tags(book):
    qs = Book.objects.filter(title="The Dispossessed")
    first = querystash.explain(qs)
    assert (first.outcome, first.cached, first.reason) == ("miss", True, "")
    assert first.reads[0].filled
    # the table's tag, refined by querystash-fields when installed, and the global tag
    assert first.tags[-1] == "*" and first.tags[0].startswith("testapp_book")
    assert first.key.startswith(_runtime.current.config["KEY_PREFIX"])
    assert "testapp_book" in first.sql
    second = querystash.explain(qs)
    assert (second.outcome, second.cached, second.key) == ("hit", True, first.key)
    assert second.reads[0].saved == pytest.approx(first.reads[0].seconds)
    assert qs._result_cache is None  # a copy ran, not the queryset


def test_explain_ops_and_prefetch(book):
    assert querystash.explain(Book.objects.all(), op="count").reads[0].op == "count"
    assert querystash.explain(Book.objects.all(), op="iterator").reason == \
        _reasons.OP_NOT_ENABLED
    assert querystash.explain(Book.objects.filter(pk=-1), op="get").outcome == "miss"
    both = querystash.explain(Book.objects.prefetch_related("tags"))
    assert [r.label for r in both.reads] == ["testapp.Book", "testapp.Tag"]
    with pytest.raises(ValueError):
        querystash.explain(Book.objects.all(), op="delete")


def test_explain_reports_the_invalidations_of_its_writes(book):
    seen = querystash.explain(lambda: Book.objects.filter(pk=book.pk).update(title="Lathe"))
    assert any("testapp_book" in tags for tags in seen.invalidations)
    assert seen.reads == []  # an update reads nothing


def test_explain_uses_the_read_paths_own_ladder(book, monkeypatch):
    """Positive control: explain() reports what the read path decides, so a
    change planted in the read path's ladder shows in explain() at once."""
    original = _reads._enabled_timeout

    def planted(rt, spec, op, model, why=False):
        if model is Book and spec is None:
            return _reasons.NOT_CONFIGURED if why else None
        return original(rt, spec, op, model, why)

    monkeypatch.setattr(_reads, "_enabled_timeout", planted)
    assert querystash.explain(Book.objects.all()).reason == _reasons.NOT_CONFIGURED


def test_the_debug_log_line_gives_the_code_and_the_words(book, caplog):
    caplog.set_level(logging.DEBUG, logger="querystash")
    list(Book.objects.order_by("?"))
    assert f"veto testapp.Book fetch: volatile ({querystash.REASONS['volatile']})" \
        in caplog.text
    with querystash.disabled():
        list(Book.objects.all())
    assert "bypass testapp.Book fetch: disabled" in caplog.text


def test_no_log_and_no_event_when_nobody_asks(book, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="querystash")
    calls = []
    monkeypatch.setattr(_runtime.Runtime, "emit", lambda *a, **k: calls.append(a))
    list(Book.objects.order_by("?"))
    list(Book.objects.nocache())
    assert calls == [] and "volatile" not in caplog.text
