"""Several database aliases: entries kept apart, state per alias, routers."""

from __future__ import annotations

import pytest
from django.db import connections, transaction
from django.test import override_settings

from tests.testapp.models import Author

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def names(alias):
    return list(Author.objects.using(alias).order_by("name").values_list("name", flat=True))


def test_same_query_on_two_aliases_is_cached_apart(django_assert_num_queries, counts):
    Author.objects.using("default").create(name="on-default")
    Author.objects.using("other").create(name="on-other")
    assert names("default") == ["on-default"]
    assert names("other") == ["on-other"]
    with django_assert_num_queries(0, connection=connections["default"]), \
            django_assert_num_queries(0, connection=connections["other"]):
        assert names("default") == ["on-default"]
        assert names("other") == ["on-other"]
    assert counts("testapp.Author")["hits"] == 2


def test_a_write_on_one_alias_makes_reads_there_fresh():
    Author.objects.using("other").create(name="a")
    assert names("other") == ["a"]
    Author.objects.using("other").create(name="b")
    assert names("other") == ["a", "b"]


def test_transaction_state_is_per_alias(counts):
    Author.objects.using("default").create(name="d")
    Author.objects.using("other").create(name="o")
    with transaction.atomic(using="other"):
        Author.objects.using("other").create(name="o2")
        # The transaction on "other" wrote the author table there: read-your-writes.
        assert names("other") == ["o", "o2"]
        # "default" is not in a transaction: its reads fill and then hit.
        # (Tags are shared by all aliases, so the write above did invalidate
        # default's entries too: coarser, never stale, and safe for replicas.)
        assert names("default") == ["d"]
        hits = counts("testapp.Author").get("hits", 0)
        assert names("default") == ["d"]
        assert counts("testapp.Author")["hits"] == hits + 1
    assert names("other") == ["o", "o2"]
    assert not connections["other"].__dict__.get("_querystash_written")


def test_a_write_through_one_alias_invalidates_the_table_for_all(counts):
    # A replica alias reads the table a primary alias writes: shared tags are
    # what keeps its entries from going stale.
    Author.objects.using("other").create(name="o")
    assert names("other") == ["o"]
    Author.objects.using("default").create(name="d")
    misses = counts("testapp.Author")["misses"]
    assert names("other") == ["o"]
    assert counts("testapp.Author")["misses"] == misses + 1


class ReadFromOther:
    def db_for_read(self, model, **hints):
        return "other"

    def db_for_write(self, model, **hints):
        return "other"

    def allow_relation(self, *args, **hints):
        return True


def test_router_decides_the_alias(django_assert_num_queries):
    Author.objects.using("default").create(name="default-row")
    Author.objects.using("other").create(name="routed")
    with override_settings(DATABASE_ROUTERS=[ReadFromOther()]):
        assert list(Author.objects.values_list("name", flat=True)) == ["routed"]
        with django_assert_num_queries(0, connection=connections["other"]):
            assert list(Author.objects.values_list("name", flat=True)) == ["routed"]
        Author.objects.create(name="routed-2")  # routed write
        assert sorted(Author.objects.values_list("name", flat=True)) == ["routed", "routed-2"]
    assert names("default") == ["default-row"]
