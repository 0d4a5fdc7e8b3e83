"""``manage.py querystash plugins | stats | invalidate``."""

from __future__ import annotations

import io

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from querystash import _runtime
from tests.plugins import counting_observer, registered
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

DEFAULT_HOOKS = {
    "default_keys": "querystash_key_function",
    "default_storage": "querystash_storage",
    "default_invalidation": "querystash_invalidation_strategy",
    "default_eligibility": "querystash_eligibility",
}


def querystash(*args) -> str:
    out = io.StringIO()
    call_command("querystash", *args, stdout=out)
    return out.getvalue()


def rows(output: str) -> dict[str, list[str]]:
    """First column -> the other whitespace-separated words of its line."""
    table = {}
    for line in output.splitlines():
        words = line.split()
        if words:
            table[words[0]] = words[1:]
    return table


def queries(read) -> int:
    with CaptureQueriesContext(connection) as ctx:
        read()
    return len(ctx.captured_queries)


def read_books():
    return list(Book.objects.values_list("title", flat=True))


def read_authors():
    return list(Author.objects.values_list("name", flat=True))


@pytest.fixture
def library():
    author = Author.objects.create(name="Jemisin")
    Book.objects.create(title="The Fifth Season", author=author)
    Book.objects.create(title="The Obelisk Gate", author=author)
    # fill the cache
    read_books()
    read_authors()
    assert queries(read_books) == 0 and queries(read_authors) == 0


# -- plugins -----------------------------------------------------------------------


def test_plugins_lists_the_defaults_with_their_hooks():
    output = querystash("plugins")
    table = rows(output)
    assert table["name"] == ["version", "enabled", "hooks"]
    for name, hook in DEFAULT_HOOKS.items():
        assert name in table, output
        assert table[name][:2] == ["built-in", "yes"], table[name]
        assert hook in " ".join(table[name][2:])


def test_plugins_lists_an_installed_plugin():
    with registered(counting_observer, "counting"):
        table = rows(querystash("plugins"))
    assert table["counting"] == ["yes", "querystash_observer"]


def test_plugins_shows_a_disabled_plugin_as_no():
    value = {**settings.QUERYSTASH, "DISABLED_PLUGINS": ["default_eligibility"]}
    with override_settings(QUERYSTASH=value):
        table = rows(querystash("plugins"))
    assert table["default_eligibility"][:2] == ["built-in", "no"]
    assert table["default_keys"][:2] == ["built-in", "yes"]


def test_plugins_shows_a_plugin_disabled_by_environment(monkeypatch):
    with registered(counting_observer, "counting"):
        monkeypatch.setenv("QUERYSTASH_DISABLE_PLUGINS", "counting")
        try:
            _runtime.rebuild()
            table = rows(querystash("plugins"))
        finally:
            monkeypatch.delenv("QUERYSTASH_DISABLE_PLUGINS")
            _runtime.rebuild()
    assert table["counting"] == ["no", "querystash_observer"]


# -- stats -----------------------------------------------------------------------------


def test_stats_prints_storage_and_per_model_counters(library):
    read_books()
    read_books()
    output = querystash("stats")
    assert "storage: django" in output
    assert "caching: on" in output
    assert "backend: querystash in-process store" in output
    table = rows(output)
    header = table["model"]
    assert header[:3] == ["hits", "misses", "fills"] and header[-1] == "hit%"
    assert "ONLY THIS PROCESS'S FIGURES" in output  # the in-process store is not shared
    book = dict(zip(header, table["testapp.Book"], strict=True))
    # the fixture filled (1 miss, 1 fill, 1 hit), then two more hits
    assert (book["hits"], book["misses"], book["fills"], book["hit%"]) == ("3", "1", "1", "75.0")
    author = dict(zip(header, table["testapp.Author"], strict=True))
    assert (author["hits"], author["misses"], author["hit%"]) == ("1", "1", "50.0")


def test_stats_before_any_query():
    output = querystash("stats")
    assert "storage: django" in output
    assert "no queries counted" in output


def test_stats_reports_caching_off_and_the_problem():
    value = {**settings.QUERYSTASH, "STORAGE": "nosuchstore"}
    with override_settings(QUERYSTASH=value):
        output = querystash("stats")
    assert "caching: OFF" in output
    assert "nosuchstore" in output


# -- invalidate ------------------------------------------------------------------------


def test_invalidate_a_model(library):
    output = querystash("invalidate", "testapp.Book")
    assert "testapp.Book" in output
    assert queries(read_books) == 1, "the next Book read is a miss"
    assert queries(read_books) == 0
    assert queries(read_authors) == 0, "Author entries are left alone"


def test_invalidate_several_models_case_insensitively(library):
    querystash("invalidate", "testapp.book", "testapp.Author")
    assert queries(read_books) == 1
    assert queries(read_authors) == 1


def test_invalidate_an_app_label_invalidates_its_models(library):
    # Used to fail with "not enough values to unpack".
    output = querystash("invalidate", "testapp")
    assert "testapp" in output
    assert queries(read_books) == 1
    assert queries(read_authors) == 1


def test_invalidate_an_unknown_app_label_says_what_to_give(library):
    with pytest.raises(CommandError) as info:
        querystash("invalidate", "library")
    message = str(info.value)
    assert "Unknown model or app label 'library'" in message
    assert "app_label.Model" in message and "testapp" in message
    assert queries(read_books) == 0, "nothing was invalidated"


def test_invalidate_all(library):
    output = querystash("invalidate", "--all")
    assert "every" in output.lower()
    assert queries(read_books) == 1
    assert queries(read_authors) == 1
    assert queries(read_books) == 0


def test_invalidate_counts_as_invalidations(library, counts):
    querystash("invalidate", "testapp.Book")
    assert counts()["invalidations"] >= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--all"),
        (("testapp.Book", "--all"), "not both"),
        (("testapp.Nope",), "Unknown model"),
        (("nosuchapp.Book",), "Unknown model"),
        (("Book",), "Unknown model"),
    ],
    ids=["no-args", "both", "unknown-model", "unknown-app", "no-app-label"],
)
def test_invalidate_errors(library, args, message):
    with pytest.raises(CommandError, match=message):
        querystash("invalidate", *args)
    assert queries(read_books) == 0, "nothing was invalidated"


def test_no_action_is_an_error():
    with pytest.raises(CommandError):
        querystash()


def test_unknown_action_is_an_error():
    with pytest.raises(CommandError):
        querystash("flush")
