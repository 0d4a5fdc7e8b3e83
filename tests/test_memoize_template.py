"""``{% memoize %}``: a template fragment memoized like a function."""

from __future__ import annotations

import pytest
from django.db import connection
from django.template import Context, Template, TemplateSyntaxError
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

import querystash
from querystash import _capture, _memoize
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]

LIST = (
    "{% load querystash %}<ul>{% memoize \"books\" status %}"
    "{% for b in books %}<li>{{ b.title }} by {{ b.author.name }}</li>{% endfor %}"
    "{% endmemoize %}</ul>"
)


@pytest.fixture(autouse=True)
def templates():
    with override_settings(TEMPLATES=TEMPLATES):
        yield


@pytest.fixture
def data():
    alice = Author.objects.create(name="Alice")
    Book.objects.create(title="One", author=alice)
    Book.objects.create(title="Two", author=alice, status=2)
    return {"alice": alice}


def render(source, status, **extra):
    """Render with a *lazy* queryset: it is evaluated inside the fragment."""
    books = Book.objects.filter(status=status).select_related("author").order_by("pk")
    with CaptureQueriesContext(connection) as ctx:
        html = Template(source).render(Context({"books": books, "status": status, **extra}))
    return html, len(ctx.captured_queries)


def stats():
    return querystash.memoize_stats().get("template:books", {})


def test_a_fragment_is_served_until_a_write_changes_what_it_read(data):
    html, queries = render(LIST, 1)
    assert html == "<ul><li>One by Alice</li></ul>" and queries >= 1
    assert render(LIST, 1) == (html, 0)
    assert stats()["hits"] == 1
    Author.objects.filter(pk=data["alice"].pk).update(name="Alicia")
    assert render(LIST, 1)[0] == "<ul><li>One by Alicia</li></ul>"
    Book.objects.create(title="Three", author=data["alice"])
    assert render(LIST, 1)[0] == "<ul><li>One by Alicia</li><li>Three by Alicia</li></ul>"


def test_arguments_vary_the_key(data):
    assert render(LIST, 1)[0] == "<ul><li>One by Alice</li></ul>"
    assert render(LIST, 2)[0] == "<ul><li>Two by Alice</li></ul>"
    assert render(LIST, 1)[1] == 0 and render(LIST, 2)[1] == 0


def test_the_fragment_text_is_part_of_the_key(data):
    other = LIST.replace(" by ", " - ")
    assert render(LIST, 1)[0] == "<ul><li>One by Alice</li></ul>"
    assert render(other, 1)[0] == "<ul><li>One - Alice</li></ul>"


def test_a_fragment_that_cannot_be_tracked_is_rendered_every_time(data):
    source = ("{% load querystash %}{% memoize \"books\" %}"
              "{% for b in raw %}{{ b.title }}{% endfor %}{% endmemoize %}")
    for _ in range(2):
        raw = Book.objects.raw("SELECT * FROM testapp_book ORDER BY id")
        assert Template(source).render(Context({"raw": raw})) == "OneTwo"
    assert stats().get(_memoize.VETO + _capture.RAW_READ) == 2


def test_timeout_and_syntax(data):
    timed = LIST.replace('"books" status', '"books" status timeout=60')
    assert render(timed, 1)[0] == "<ul><li>One by Alice</li></ul>"
    assert render(timed, 1)[1] == 0
    with pytest.raises(TemplateSyntaxError):
        Template("{% load querystash %}{% memoize %}x{% endmemoize %}")
    with pytest.raises(TemplateSyntaxError):
        Template("{% load querystash %}{% memoize \"x\" timeout=0 %}x{% endmemoize %}").render(
            Context({}))
