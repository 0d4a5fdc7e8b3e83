"""``querystash.debug_toolbar.QuerystashPanel`` through django-debug-toolbar's
own machinery: its middleware runs the panel around a request, its store
keeps the panel's data (JSON: toolbar 6+), and its ``render_panel`` view —
what the toolbar's JavaScript calls when the panel is opened — renders it.
Every reason code's read (tests/observe_cases.py) shows its row and reason.
The same panel in a real browser: tests/test_debug_toolbar_browser.py."""

from __future__ import annotations

import re
from contextlib import contextmanager
from html import unescape

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

import querystash
from querystash import _explain, _observe, _reasons, _runtime
from tests.helpers import in_thread
from tests.observe_cases import CASES, MORE, make_data, snapshot_expected, titles
from tests.testapp.models import Book

pytestmark = pytest.mark.django_db(transaction=True)

PANEL = "QuerystashPanel"


@contextmanager
def toolbar_settings():
    # Apps are set up before the other settings change: STATIC_URL first.
    apps = [*settings.INSTALLED_APPS, "django.contrib.staticfiles", "debug_toolbar"]
    with override_settings(STATIC_URL="/static/"), override_settings(
        DEBUG=True,
        INSTALLED_APPS=apps,
        MIDDLEWARE=["debug_toolbar.middleware.DebugToolbarMiddleware"],
        ROOT_URLCONF="tests.toolbar_urls",
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates",
                    "APP_DIRS": True}],
        # RENDER_PANELS False: stored, rendered when opened (toolbar 5 inlines
        # them under a multi-process server, which the test client says it is)
        DEBUG_TOOLBAR_CONFIG={"IS_RUNNING_TESTS": False, "RENDER_PANELS": False,
                              "SHOW_TOOLBAR_CALLBACK": lambda request: True},
        DEBUG_TOOLBAR_PANELS=["debug_toolbar.panels.sql.SQLPanel",
                              "querystash.debug_toolbar.QuerystashPanel"],
    ):
        yield


@pytest.fixture
def toolbar():
    with toolbar_settings():
        yield


def request_id(response) -> tuple[str, str]:
    """(parameter, value): the toolbar's id of the request, from the toolbar it
    inserted (``request_id`` since toolbar 6, ``store_id`` before)."""
    found = re.search(r'data-(request|store)-id="([0-9a-f]+)"', response.content.decode())
    assert found, "the toolbar was not inserted"
    return f"{found.group(1)}_id", found.group(2)


def open_panel(client, response) -> str:
    """What the toolbar's JavaScript shows when the panel is clicked."""
    name, value = request_id(response)
    shown = client.get("/__debug__/render_panel/", {name: value, "panel_id": PANEL})
    assert shown.status_code == 200
    return shown.json()["content"]


def rows(content: str) -> list[tuple[str, str]]:
    """(outcome, reason) of each row of the panel."""
    return re.findall(r'<tr class="qs-row" data-outcome="([a-z]+)" data-reason="([a-z-]*)"',
                      content)


def test_the_panel_shows_fill_veto_then_hit_and_invalidations(toolbar, client):
    first = open_panel(client, client.get("/books/"))
    assert rows(first)[-2:] == [("fill", ""), ("veto", "volatile")]
    assert querystash.REASONS["volatile"] in unescape(first)
    second = client.get("/books/", {"write": "1"})
    content = unescape(open_panel(client, second))
    assert rows(content)[-2:] == [("hit", ""), ("veto", "volatile")]
    # the hit saved its key's miss time, known from the first request
    saved = float(re.search(r'class="qs-saved">([0-9.]+) ms', content).group(1))
    assert saved > 0
    assert "testapp_book" in content.split("Invalidations sent")[1]


@pytest.mark.parametrize("code", sorted(CASES) + sorted(MORE))
def test_every_reason_code_shows_in_the_panel(toolbar, client, code):
    make_data()
    connection.ensure_connection()
    expected = MORE[code][0] if code in MORE else \
        snapshot_expected() if code == _reasons.SNAPSHOT else code
    content = open_panel(client, client.get(f"/case/{code}/"))
    found = rows(content)
    if code == _reasons.EMPTY:
        assert found == []  # no query ran: nothing to list
        return
    assert found, content
    outcome, reason = found[0]
    assert reason == expected
    if code == _reasons.SNAPSHOT:
        assert outcome == ("miss" if expected else "fill")
    else:
        assert outcome == _reasons.kind(expected)
        assert querystash.REASONS[expected] in unescape(content)


def test_no_toolbar_request_running_means_nothing_observes(toolbar, client):
    client.get("/books/")
    assert _observe.route not in _runtime.current.observers
    assert _observe.recording.get() is None


def test_a_recorder_sees_only_the_reads_of_its_own_context():
    """While one request records, reads elsewhere (another thread, as another
    request would be) reach the observer but not that request's recorder."""
    make_data()
    with _explain.recorded() as mine:
        other = in_thread(lambda: _observe.recording.get())
        in_thread(lambda: titles(Book.objects.filter(title="elsewhere")))
        titles(Book.objects.filter(title="here"))
    assert other is None
    assert [("here" in r.params[0]) for r in mine.reads] == [True]
