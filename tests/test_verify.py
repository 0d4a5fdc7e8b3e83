"""Verify mode: a sampled hit is compared with the database.

A write through the raw DB-API connection bypasses Django's cursor (and so
querystash): the one way to plant a stale entry, which verify mode must see.
"""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from querystash.exceptions import StaleRead
from tests.testapp.models import Author

pytestmark = pytest.mark.django_db(transaction=True)


def plant_stale_entry():
    author = Author.objects.create(name="old")
    assert Author.objects.get(pk=author.pk).name == "old"  # cached
    raw = connection.connection.cursor()  # below Django: no invalidation
    raw.execute(f"UPDATE testapp_author SET name = 'new' WHERE id = {int(author.pk)}")
    raw.close()
    if not connection.get_autocommit():
        connection.connection.commit()
    return author.pk


def test_without_verify_the_planted_entry_is_served():
    # The control: this really is a stale entry.
    pk = plant_stale_entry()
    assert Author.objects.get(pk=pk).name == "old"


def test_verify_counts_and_logs_a_stale_hit(counts, caplog):
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "VERIFY": 1.0}):
        pk = plant_stale_entry()
        with caplog.at_level(logging.ERROR, logger="querystash"):
            Author.objects.get(pk=pk)
    assert counts("testapp.Author")["stale"] == 1
    assert any("stale read" in r.getMessage() for r in caplog.records)


def test_verify_raise(counts):
    config = {**settings.QUERYSTASH, "VERIFY": 1.0, "VERIFY_RAISE": True}
    with override_settings(QUERYSTASH=config):
        pk = plant_stale_entry()
        with pytest.raises(StaleRead):
            Author.objects.get(pk=pk)


def test_verify_is_silent_when_the_cache_is_right(counts):
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "VERIFY": 1.0}):
        author = Author.objects.create(name="a")
        for _ in range(3):
            assert Author.objects.get(pk=author.pk).name == "a"
        assert counts("testapp.Author")["hits"] == 2
        assert "stale" not in counts("testapp.Author")
