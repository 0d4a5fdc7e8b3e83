"""Memoized functions observed by tests/test_memoize_observing.py, called
in pages of tests/toolbar_urls.py (a module that needs the toolbar
installed: these do not)."""

from __future__ import annotations

from django.db import connection

import querystash
from tests.observe_cases import titles
from tests.testapp.models import Author, Book


@querystash.memoize
def shelf_of(author_id):
    """Two queries on its miss: the author, then the author's books."""
    name = Author.objects.get(pk=author_id).name
    return name, titles(Book.objects.filter(author_id=author_id).order_by("pk"))


@querystash.memoize
def raw_count():
    """An ORM read, then a raw cursor read: the capture vetoes the fill."""
    Book.objects.filter(pk__gt=0).count()
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM testapp_book")
        return cursor.fetchone()[0]
