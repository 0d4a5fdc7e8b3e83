"""Tag text of field values: stable across types, processes and spellings."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.db import models
from django.test import override_settings
from querystash_fields._values import render, render_prepped, taggable

from tests.testapp.models import Book

pytestmark = pytest.mark.django_db(transaction=True)


def test_types_render_distinctly():
    values = [True, 1, "1", Decimal("1"), None, datetime.date(2024, 1, 1),
              uuid.UUID(int=1), datetime.time(1, 0)]
    rendered = [render_prepped(v) for v in values]
    assert len(set(rendered)) == len(values)
    assert render_prepped(False) != render_prepped(0)


def test_decimals_normalised():
    field = Book._meta.get_field("price")
    assert render(field, Decimal("5.00")) == render(field, Decimal("5")) == render(field, 5.0)
    assert render(field, Decimal("0.00")) == render(field, Decimal("-0"))


def test_aware_datetimes_are_utc():
    field = Book._meta.get_field("published")
    utc = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
    paris = utc.astimezone(ZoneInfo("Europe/Paris"))
    assert render(field, utc) == render(field, paris) == "z2024-05-01T12:00:00"


def test_foreign_key_renders_its_target_value():
    fk = Book._meta.get_field("author")
    pk = Book._meta.get_field("id")
    assert render(fk, 5) == render(pk, 5) == render(fk, "5")


def test_strings_with_separators_are_hashed():
    field = Book._meta.get_field("title")
    odd = render(field, "a,b=c:d e")
    assert odd.startswith("x") and "," not in odd and "=" not in odd and " " not in odd
    assert render(field, "plain") == "splain"
    assert render(field, "a" * 200) != render(field, "a" * 201)


def test_expressions_are_unknown():
    assert render(Book._meta.get_field("status"), models.F("status") + 1) is None


def test_what_is_taggable():
    assert taggable(Book._meta.get_field("title"), "postgresql")
    assert not taggable(Book._meta.get_field("title"), "mysql")  # case-insensitive
    assert not taggable(models.FloatField(), "sqlite")
    assert not taggable(models.JSONField(), "sqlite")
    assert taggable(models.UUIDField(), "sqlite")


@pytest.mark.parametrize("store", ["redis_cache_alias", "memcached_cache_alias"])
def test_every_storage(store, request, counts):
    alias = request.getfixturevalue(store)
    from tests.testapp.models import Author

    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "django": {"cache": alias}}):
        ann = Author.objects.create(name="Ann")
        b = Book.objects.create(title="t", author=ann, status=2)
        other = Book.objects.create(title="o", author=ann, status=1)

        def read():
            return list(Book.objects.cache().filter(author=ann, status=2).values_list("title"))

        read()
        read()
        hits = counts("testapp.Book")["hits"]
        other = Book.objects.get(pk=other.pk)
        other.title = "x"
        other.save()
        assert read() == [("t",)] and counts("testapp.Book")["hits"] == hits + 1
        b = Book.objects.get(pk=b.pk)
        b.title = "u"
        b.save()
        assert read() == [("u",)] and counts("testapp.Book")["hits"] == hits + 1
