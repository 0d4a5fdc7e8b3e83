"""querystash on memcached through the plugin: the hit is one multi-get,
stamps are added, invalidation is batched, oversized rows are skipped, and
the plugin's settings, checks and stats command."""

from __future__ import annotations

import logging
from io import StringIO

import djp
import pytest
import querystash_memcached
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from pymemcache.client.base import Client
from querystash_memcached import DEFAULTS, MemcachedStorage

import querystash
from querystash.testing import plugins_implementing, runtime
from tests.helpers import system_checks
from tests.testapp.models import Author, Blob, Book

from .conftest import cached, truth

pytestmark = pytest.mark.django_db(transaction=True)

METHODS = ("get_many", "add_many", "add_get_many", "set", "delete_many")


@pytest.fixture
def calls(mc, monkeypatch):
    """Counts the calls querystash makes on the memcached storage."""
    counted = dict.fromkeys(METHODS, 0)
    for name in METHODS:
        original = getattr(mc.storage, name)

        def wrapper(*args, _name=name, _original=original):
            counted[_name] += 1
            return _original(*args)

        monkeypatch.setattr(mc.storage, name, wrapper)
    return counted


def server_value(rt, key: str):
    storage = rt.storage
    return storage.server_for(key).run(Client.get, storage.key(key))


# -- the hit path -----------------------------------------------------------------


def test_the_storage_is_memcached(mc):
    assert mc.storage.name == "memcached" and mc.storage.shared


def test_a_hit_is_exactly_one_get_many_and_one_round_trip(data, mc, calls, counts):
    first = cached()
    assert counts("testapp.Book")["misses"] == 1
    before = dict(calls)
    trips = mc.storage.counters["round trips"]
    assert cached() == first == truth()
    assert counts("testapp.Book")["hits"] == 1
    assert {m: calls[m] - before[m] for m in METHODS} == {
        "get_many": 1, "add_many": 0, "add_get_many": 0, "set": 0, "delete_many": 0}
    assert mc.storage.counters["round trips"] == trips + 1


def test_a_miss_creates_the_stamps_with_add_in_its_one_read(data, mc, calls):
    # The writes of ``data`` deleted the stamps: the miss adds them in the
    # same round trip as its read (noreply adds, then the get), and its
    # small fill is sent with noreply: one round trip in all.
    stamp = mc.stamp_key("testapp_book")
    trips = mc.storage.counters["round trips"]
    cached()
    assert (calls["add_get_many"], calls["add_many"], calls["get_many"]) == (1, 0, 0)
    assert mc.storage.counters["round trips"] == trips + 1
    value = server_value(mc, stamp)
    assert value is not None and len(value) == 8
    assert server_value(mc, mc.stamp_key("*")) is not None


def test_a_stamp_another_process_created_first_is_kept(data, mc, counts):
    stamp = mc.stamp_key("testapp_book")
    theirs = b"\x01" * 8
    mc.storage.set(stamp, theirs, 60)  # created by another process
    cached()
    assert server_value(mc, stamp) == theirs  # add never overwrites
    assert cached() == truth()
    assert counts("testapp.Book")["hits"] == 1  # the entry was stamped with theirs


def test_a_write_invalidates_with_one_batched_delete(data, mc, calls):
    old = cached()
    trips = mc.storage.counters["round trips"]
    querystash.invalidate_models("testapp.Book", "testapp.Author", "testapp.Tag")
    assert calls["delete_many"] == 1
    assert mc.storage.counters["round trips"] == trips + 1
    assert server_value(mc, mc.stamp_key("testapp_book")) is None
    Book.objects.filter(title="One").update(title="Uno")
    assert cached() == truth() != old


def test_writes_are_seen_on_every_path(data, mc):
    old = cached()
    Book.objects.create(title="Three", author=data["alice"])
    assert cached() == truth() != old
    data["bob"].delete()  # cascades to his book
    assert cached() == truth()
    assert Author.objects.count() == 1


def test_an_oversized_row_is_not_cached_counted_and_logged_once(mc, counts, caplog):
    caplog.set_level(logging.WARNING, logger="querystash.memcached")
    Blob.objects.create(data=b"x" * (2 * 1024 * 1024))
    for _ in range(3):
        assert len(bytes(Blob.objects.get().data)) == 2 * 1024 * 1024
    assert counts("testapp.Blob").get("hits", 0) == 0
    assert mc.storage.counters["oversized values skipped"] == 3
    assert len([r for r in caplog.records if "max_item_size" in r.getMessage()]) == 1
    assert counts("").get("errors", 0) == 0  # not a store failure: the breaker stays closed
    assert mc.store_usable()


def test_keys_with_unsafe_tags_work(data, mc):
    tags = ["app_book:title=Hello World", "ünïcödé", "x" * 400]
    querystash.invalidate_tags(tags)  # no error: the keys are hashed
    assert cached() == truth()


# -- stats ------------------------------------------------------------------------


def test_stats_command_shows_memcached_figures(data, mc):
    cached()
    cached()
    out = StringIO()
    call_command("querystash", "stats", stdout=out)
    text = out.getvalue()
    assert "storage: memcached" in text
    for field in ("curr_items:", "evictions:", "bytes:", "limit_maxbytes:", "get_hits:",
                  "get_misses:", "oversized values skipped:", "servers unreachable: 0"):
        assert field in text, text
    assert "unreachable (" not in text


def test_stats_command_with_the_server_down(data, memcached_server, mc):
    memcached_server.kill()
    out = StringIO()
    call_command("querystash", "stats", stdout=out)
    assert "servers unreachable: 1" in out.getvalue()


# -- settings, checks, DJP --------------------------------------------------------


def run_checks(value) -> list:
    with override_settings(QUERYSTASH=value):
        found = system_checks()
        return [m for m in found if m.id.startswith("querystash.")], runtime().enabled


@pytest.mark.parametrize("section, named", [
    ({"timeout": "fast"}, 'QUERYSTASH["memcached"]["timeout"]'),
    ({"servers": "127.0.0.1:11211"}, 'QUERYSTASH["memcached"]["servers"]'),
    ({"key_prefix": "a b"}, 'QUERYSTASH["memcached"]["key_prefix"]'),
    ({"sever": ["127.0.0.1:1"]}, "unknown key"),
])
def test_a_bad_section_is_a_clear_check_error_and_caching_is_off(section, named):
    found, enabled = run_checks({**settings.QUERYSTASH, "STORAGE": "memcached",
                                 "memcached": section})
    assert not enabled
    assert [m.id for m in found] in (["querystash.E003"], ["querystash.E006"]), found
    assert named in found[0].msg and found[0].msg.startswith('QUERYSTASH["memcached"]')


def test_a_good_section_passes_the_checks(memcached_server):
    found, enabled = run_checks({**settings.QUERYSTASH, "STORAGE": "memcached",
                                 "memcached": {"servers": [memcached_server.url]}})
    assert found == [] and enabled


def test_bad_section_reads_still_come_from_the_database(data):
    value = {**settings.QUERYSTASH, "STORAGE": "memcached", "memcached": {"timeout": -1}}
    with override_settings(QUERYSTASH=value):
        assert cached() == truth()


def test_its_section_picks_memcached_and_disabling_it_falls_back(memcached_server):
    # STORAGE unset, other storage plugins installed next to this one
    # (querystash-redis...) switched off: the one-storage-plugin project.
    others = [name for name in plugins_implementing("querystash_storage") if name != "memcached"]
    base = {k: v for k, v in settings.QUERYSTASH.items() if k != "STORAGE"}
    base["DISABLED_PLUGINS"] = others
    section = {"servers": [memcached_server.url]}
    with override_settings(QUERYSTASH={**base, "memcached": section}):
        assert isinstance(runtime().storage, MemcachedStorage)
    with override_settings(QUERYSTASH={**base, "memcached": section,
                                       "DISABLED_PLUGINS": [*others, "memcached"]}):
        assert runtime().storage.name == "django"  # the built-in store
    with override_settings(QUERYSTASH={**base, "STORAGE": "django", "memcached": section}):
        assert runtime().storage.name == "django"  # the built-in store
    # Installed, no section, STORAGE unset: the built-in store, and a check says why.
    with override_settings(QUERYSTASH=base):
        assert runtime().storage.name == "django"
        infos = [m for m in system_checks() if m.id == "querystash.I001"]
        assert len(infos) == 1 and "memcached" in infos[0].msg


def test_plugin_is_listed_under_its_entry_point_name(mc):
    out = StringIO()
    call_command("querystash", "plugins", stdout=out)
    line = next(line for line in out.getvalue().splitlines() if line.startswith("memcached "))
    assert "0.1.0" in line and "querystash_storage" in line


def test_djp_settings_fills_defaults_without_overwriting():
    current = {"QUERYSTASH": {"memcached": {"servers": ["10.0.0.1:11211"], "timeout": 2}}}
    querystash_memcached.settings(current)
    section = current["QUERYSTASH"]["memcached"]
    assert section["servers"] == ["10.0.0.1:11211"] and section["timeout"] == 2
    assert section["connect_timeout"] == DEFAULTS["connect_timeout"]
    assert set(section) == set(DEFAULTS)


def test_djp_settings_adds_no_section_and_copies_the_defaults():
    current = {"INSTALLED_APPS": ["django.contrib.contenttypes"], "MIDDLEWARE": []}
    djp.settings(current)  # through DJP: the entry point is registered
    # no section written, none added: it would make memcached the store
    assert "memcached" not in current["QUERYSTASH"]
    current = {"INSTALLED_APPS": [], "MIDDLEWARE": [], "QUERYSTASH": {"memcached": {}}}
    djp.settings(current)
    section = current["QUERYSTASH"]["memcached"]
    assert section == DEFAULTS
    section["servers"].append("10.0.0.2:11211")
    assert DEFAULTS["servers"] == ["127.0.0.1:11211"]


def test_djp_settings_leaves_a_wrong_section_for_the_checks():
    current = {"QUERYSTASH": {"memcached": "127.0.0.1:11211"}}
    querystash_memcached.settings(current)
    assert current["QUERYSTASH"]["memcached"] == "127.0.0.1:11211"
