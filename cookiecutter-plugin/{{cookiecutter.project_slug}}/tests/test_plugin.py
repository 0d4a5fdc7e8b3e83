"""{{ cookiecutter.plugin_name }} against the real querystash core.

Tests that cache must not run inside one transaction (Django's TestCase): on
SQLite a read in a transaction is never stored. Hence ``transaction=True``.
"""

from __future__ import annotations

import pytest
import querystash
from django.conf import settings
from django.core import checks
from django.db import connection
from django.test import override_settings
from querystash import Dependencies, QueryInfo, WriteEvent
from querystash.testing import count, plugin_hooks, read_tags

from {{ cookiecutter.module_name }} import SECTION, DependsOnStrategy
from {{ cookiecutter.module_name }} import settings as djp_settings
from tests.demo.models import Counter, Item

pytestmark = pytest.mark.django_db(transaction=True)

PLUGIN = "{{ cookiecutter.module_name }}"  # the querystash entry-point name

# SQLite: every insert into demo_item counts itself in demo_counter, below Django.
TRIGGER = """
CREATE TRIGGER IF NOT EXISTS demo_item_counted AFTER INSERT ON demo_item
BEGIN
    UPDATE demo_counter SET value = value + 1 WHERE name = 'items';
END
"""


@pytest.fixture(autouse=True)
def fresh_cache(querystash_reset):
    """Empty caches and zeroed counters for every test (``querystash.testing``)."""


@pytest.fixture
def counter():
    with connection.cursor() as cursor:
        cursor.execute(TRIGGER)
    return Counter.objects.create(name="items")


def run(read):
    """(what ``read()`` returns, how many SQL queries it ran)."""
    seen = count(read)
    return seen.result, seen.queries


def items_counted():
    return Counter.objects.get(name="items").value


def item_names():
    return list(Item.objects.order_by("name").values_list("name", flat=True))


# -- wiring ---------------------------------------------------------------------------


def test_every_installed_invalidation_plugin_is_active(querystash_runtime):
    """Whatever else is installed (querystash-fields, querystash-m2m ...),
    this plugin's strategy is in the runtime next to theirs."""
    assert any(isinstance(s, DependsOnStrategy) for s in querystash_runtime.strategies)


def test_the_plugin_and_its_hook_are_loaded():
    assert plugin_hooks(PLUGIN) == {"querystash_invalidation_strategy",
                                    "querystash_settings_section"}


def test_djp_fills_the_default_section_and_keeps_the_users():
    empty = {"INSTALLED_APPS": []}
    djp_settings(empty)
    assert empty["QUERYSTASH"][SECTION] == {"tables": {}}
    mine = {"QUERYSTASH": {SECTION: {"tables": {"a": ["b"]}}}}
    djp_settings(mine)
    assert mine["QUERYSTASH"][SECTION] == {"tables": {"a": ["b"]}}
    assert settings.QUERYSTASH[SECTION]["tables"] == {"demo_counter": ["demo_item"]}


def test_manage_py_check_is_clean():
    assert checks.run_checks(tags=["querystash"]) == []


# -- the strategy ---------------------------------------------------------------------


def info(*tables):
    return QueryInfo("SELECT ...", (), "default", "multi", "fetch", frozenset(tables))


def test_query_tags_add_declared_tables_transitively():
    strategy = DependsOnStrategy({"report": ["stock"], "stock": ["order"]})
    report = strategy.query_tags(info("report"))
    assert report.add == ("order", "stock") and not report.refine  # adds, never replaces
    assert strategy.query_tags(info("report")) is report  # memoized: the core memoizes on it
    assert strategy.query_tags(info("stock", "product")).add == ("order",)
    assert strategy.query_tags(info("product")) is None  # nothing to add


def test_the_core_keeps_every_strategys_tags():
    """Composition only adds: a strategy that refines a table (as
    querystash-fields does) cannot drop the tables this plugin adds."""

    class Refining(querystash.InvalidationStrategy):
        def query_tags(self, info):
            return Dependencies(refine={"stock": ["stock#", "stock:id=1"]})

    ours = DependsOnStrategy({"stock": ["order"]})
    for order in ([Refining(), ours], [ours, Refining()]):
        tags = read_tags(info("stock"), order)  # as the core combines them
        assert {"order", "stock#", "stock:id=1"} <= set(tags), tags
        assert "stock" not in tags  # refined: every write to stock tags stock#


def test_write_tags_are_the_tables_written():
    strategy = DependsOnStrategy({"report": ["stock"]}, ignore_tables=["django_session"])
    event = WriteEvent("default", "UPDATE ...", frozenset({"stock", "django_session"}), "update")
    assert set(strategy.write_tags(event)) == {"stock"}


# -- against the real core ------------------------------------------------------------


def test_a_repeated_query_is_a_hit():
    Item.objects.create(name="apple")
    assert run(item_names) == (["apple"], 1)
    seen = count(item_names, model="demo.Item")
    assert (seen.result, seen.queries, seen.hits) == (["apple"], 0, 1)  # served from the cache


def test_a_write_is_seen_by_the_next_read():
    apple = Item.objects.create(name="apple")
    assert run(item_names) == (["apple"], 1)
    apple.name = "pear"
    apple.save()
    assert run(item_names) == (["pear"], 1)


def test_a_trigger_maintained_table_is_fresh(counter):
    assert run(items_counted) == (0, 1)
    assert run(items_counted) == (0, 0)  # cached
    Item.objects.create(name="apple")  # the trigger updates demo_counter
    assert run(items_counted) == (1, 1)  # the plugin's tag was invalidated


def test_without_the_plugin_the_trigger_write_is_missed(counter):
    """The control: what the plugin is for."""
    config = {**settings.QUERYSTASH, "DISABLED_PLUGINS": [PLUGIN]}
    with override_settings(QUERYSTASH=config):
        assert items_counted() == 0
        Item.objects.create(name="apple")
        assert items_counted() == 0  # stale: querystash never saw the trigger's write
        querystash.invalidate_models(Counter)
        assert items_counted() == 1


@pytest.mark.parametrize("tables", ["demo_item", {"demo_counter": "demo_item"}])
def test_a_bad_section_turns_caching_off_and_names_the_key(tables):
    config = {**settings.QUERYSTASH, SECTION: {"tables": tables}}
    with override_settings(QUERYSTASH=config):
        errors = [m for m in checks.run_checks(tags=["querystash"])
                  if m.id.startswith("querystash.")]
        assert [m.id for m in errors] == ["querystash.E003"], errors
        assert errors[0].msg.startswith(f'QUERYSTASH["{SECTION}"]["tables"] is ')
        assert "a dict mapping a table to a list of tables" in errors[0].msg
        Item.objects.create(name="apple")
        assert run(item_names) == (["apple"], 1)
        assert run(item_names) == (["apple"], 1)  # not cached, never stale


def test_a_misspelled_key_is_reported_with_the_right_one():
    config = {**settings.QUERYSTASH, SECTION: {"tabels": {}}}
    with override_settings(QUERYSTASH=config):
        [error] = [m for m in checks.run_checks(tags=["querystash"])
                   if m.id.startswith("querystash.")]
    assert error.id == "querystash.E006"
    assert error.msg == f'QUERYSTASH["{SECTION}"] has an unknown key "tabels".'
    assert error.hint.startswith('Did you mean "tables"?')
