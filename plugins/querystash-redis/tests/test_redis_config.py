"""The settings section, the DJP hook, the storage hook and `querystash stats`."""

from __future__ import annotations

import io

import pytest
import querystash_redis
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from querystash_redis import DEFAULTS, RedisStorage, parse

from querystash.testing import plugin, problems, runtime
from tests.helpers import check_command
from tests.testapp.models import Author

pytestmark = pytest.mark.django_db(transaction=True)


def test_djp_settings_hook_fills_defaults_without_overwriting():
    current = {"QUERYSTASH": {"redis": {"url": "redis://10.0.0.1:6380/2", "key_prefix": "a:"}}}
    querystash_redis.settings(current)
    section = current["QUERYSTASH"]["redis"]
    assert section["url"] == "redis://10.0.0.1:6380/2"
    assert section["key_prefix"] == "a:"
    assert section["socket_timeout"] == DEFAULTS["socket_timeout"]
    assert set(section) == set(DEFAULTS)
    # No section written: none is added. An installed storage plugin must not
    # point the site at its default server (the section would choose redis).
    empty: dict = {}
    querystash_redis.settings(empty)
    assert empty["QUERYSTASH"] == {}


def test_djp_hook_is_registered():
    import djp

    assert any(getattr(p, "__name__", "") == "querystash_redis"
               for p in djp.pm.get_plugins())


def test_plugin_is_registered_under_the_name_redis():
    assert plugin("redis") is querystash_redis


def test_defaults_parse():
    config = parse({})
    assert config.mode == "single"
    assert config.url == "redis://127.0.0.1:6379/0"
    assert config.socket_timeout == 0.25 and config.socket_connect_timeout == 0.25
    assert config.dogpile is None and config.key_prefix == ""


def test_modes():
    assert parse({"sentinels": [["h", 26379], "g:26380"], "service_name": "m"}).sentinels == (
        ("h", 26379), ("g", 26380))
    cluster = parse({"cluster_nodes": ["127.0.0.1:7000", "127.0.0.1:7001"]})
    assert cluster.mode == "cluster" and cluster.cluster_nodes[1] == ("127.0.0.1", 7001)
    assert parse({"dogpile": True}).dogpile.lease_ms == 2000


@pytest.mark.parametrize("section, words", [
    ("redis://x", 'QUERYSTASH["redis"] is \'redis://x\'; expected a dict'),
    ({"urll": "redis://x"}, 'unknown key "urll". Did you mean "url"?'),
    ({"url": "http://x"}, '["url"]'),
    ({"socket_timeout": 0}, '["socket_timeout"] is 0'),
    ({"socket_timeout": "1"}, '["socket_timeout"]'),
    ({"socket_connect_timeout": True}, '["socket_connect_timeout"]'),
    ({"max_connections": 0}, '["max_connections"]'),
    ({"health_check_interval": -1}, '["health_check_interval"]'),
    ({"key_prefix": "{x}"}, '["key_prefix"] is \'{x}\'; expected a string without "{"'),
    ({"sentinels": [["h", 1]]}, '["service_name"] is required'),
    ({"sentinels": ["nohost"], "service_name": "m"}, "'nohost' is not one"),
    ({"cluster_nodes": "h:1"}, '["cluster_nodes"] is'),
    ({"cluster_nodes": ["h:1"], "sentinels": ["h:2"], "service_name": "m"}, "not both"),
    ({"cluster_nodes": ["h:1"], "wait_replicas": 1}, '["wait_replicas"] is not supported'),
    ({"dogpile": {"lease": 5}}, '["dogpile"] is {\'lease\': 5}; expected None, True or'),
    ({"dogpile": {"wait_ms": -1}}, '"wait_ms" is -1, expected milliseconds'),
    ({"dogpile": 5}, '["dogpile"] is 5'),
])
def test_bad_section_is_a_clear_error(section, words):
    with pytest.raises(ValueError) as info:
        parse(section)
    assert words in str(info.value)


def test_bad_section_turns_caching_off_and_is_reported_by_check(db):
    bad = {**settings.QUERYSTASH, "STORAGE": "redis", "redis": {"socket_timeout": -1}}
    with override_settings(QUERYSTASH=bad):
        assert not runtime().enabled
        assert any('QUERYSTASH["redis"]["socket_timeout"]' in p for p in problems())
        out = io.StringIO()
        from django.core.management.base import SystemCheckError

        with pytest.raises(SystemCheckError) as info:
            check_command(stdout=out, stderr=out)
        assert "querystash.E003" in str(info.value)
        assert 'QUERYSTASH["redis"]["socket_timeout"] is -1; expected seconds' in str(info.value)
        assert "querystash.E010" not in str(info.value)  # one message, naming the key
        assert list(Author.objects.all()) == []  # queries still work


def test_storage_hook_answers_only_to_its_name():
    config = {**settings.QUERYSTASH, "redis": {}}
    assert querystash_redis.querystash_storage("django", config) is None
    assert querystash_redis.querystash_storage("memcached", config) is None
    assert isinstance(querystash_redis.querystash_storage("redis", config), RedisStorage)
    # the core calls the hook with the store the settings name, never None
    assert querystash_redis.querystash_storage(None, config) is None


def test_server_down_at_startup_does_not_turn_caching_off(use_redis):
    # Nothing listens on port 1: the client is built lazily, errors go to the breaker.
    with use_redis(url="redis://127.0.0.1:1/0") as rt:
        assert rt.enabled
        assert list(Author.objects.all()) == []


def test_stats_command_shows_redis_figures(redis_single, use_redis):
    Author.objects.create(name="A")
    with use_redis(url=redis_single.url, dogpile={"lease_ms": 500, "wait_ms": 10}):
        list(Author.objects.all())
        out = io.StringIO()
        call_command("querystash", "stats", stdout=out)
    text = out.getvalue()
    assert "storage: redis" in text
    assert "redis: single server" in text
    assert "redis server keys: 3" in text  # entry + 2 stamps
    assert "redis server memory used: " in text
    assert "evicted keys: 0" in text
    assert "redis parser: hiredis" in text
    assert "dog-pile leases: lease 500 ms, wait 10 ms" in text


def test_stats_command_when_redis_is_down(use_redis):
    with use_redis(url="redis://127.0.0.1:1/0"):
        out = io.StringIO()
        call_command("querystash", "stats", stdout=out)
    assert "store unreachable" in out.getvalue()


def test_store_errors_name_the_store_and_its_address():
    from querystash import StorageError

    storage = RedisStorage(parse({"url": "redis://:secret@127.0.0.1:1/3",
                                  "socket_connect_timeout": 0.2}))
    try:
        with pytest.raises(StorageError) as info:
            storage.get_many(["k"])
    finally:
        storage.close()
    message = str(info.value)
    assert message.startswith("redis at 127.0.0.1:1/3: ")
    assert "secret" not in message  # the address, never the credentials
