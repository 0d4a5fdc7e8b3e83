"""The core's raw stores on Django's redis and memcached caches: what they
keep between calls, and the key names they send."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import InvalidCacheKey
from django.test import override_settings
from pymemcache.client.base import PooledClient
from pymemcache.client.hash import HashClient

from querystash import _django_raw
from querystash._django_raw import DjangoMemcachedStorage, DjangoRedisStorage
from querystash.testing.storecalls import differences


def test_django_redis_client_is_kept_per_pool(redis_cache_alias):
    store = DjangoRedisStorage(redis_cache_alias)
    first = store._client()
    assert store._client() is first
    backend = caches[redis_cache_alias]._cache
    backend._pools.clear()  # Django makes a new pool: a new client around it
    second = store._client()
    assert second is not first
    assert second.connection_pool is backend._get_connection_pool(True)
    assert store._client() is second


def test_django_memcached_one_server_is_not_hashed(memcached_cache_alias, memcached_server):
    store = DjangoMemcachedStorage(memcached_cache_alias)
    assert isinstance(store._client(), PooledClient)
    store.set("qs:e:one", b"1", 60)
    assert store.get_many(["qs:e:one", "qs:t:x"]) == [b"1", None]
    store.close()
    cache = settings.CACHES[memcached_cache_alias]
    two = {**cache, "LOCATION": [memcached_server.url, memcached_server.url.replace(
        "127.0.0.1", "localhost")]}
    with override_settings(CACHES={**settings.CACHES, "two": two}):
        store = DjangoMemcachedStorage("two")
        assert isinstance(store._client(), HashClient)
        store.close()


@pytest.mark.parametrize("alias_fixture", ["redis_cache_alias", "memcached_cache_alias"])
def test_key_names_carry_the_backend_prefix_and_version(request, alias_fixture):
    alias = request.getfixturevalue(alias_fixture)
    cache = settings.CACHES[alias]
    with override_settings(CACHES={**settings.CACHES, "p": {**cache, "KEY_PREFIX": "site",
                                                            "VERSION": 3}}):
        cls = DjangoRedisStorage if "redis" in alias else DjangoMemcachedStorage
        store = cls("p")
        assert store._names(["qs:e:k", "qs:t:*"]) == ["site:3:qs:e:k", "site:3:qs:t:*"]
        assert store._names(["qs:e:k"]) == [caches["p"].make_and_validate_key("qs:e:k")]


def tenant_key(key, key_prefix, version):
    return f"{TENANT[0]}:{key_prefix}:{version}:{key}"


TENANT = ["a"]


@pytest.mark.parametrize("alias_fixture", ["redis_cache_alias", "memcached_cache_alias"])
def test_key_names_follow_a_key_function_every_time(request, alias_fixture):
    """Names are remembered per key with Django's own KEY_FUNCTION only: a
    key function of the site's (a tenant prefix, as django-tenants has) is
    asked every time, and names the same key apart for two tenants."""
    alias = request.getfixturevalue(alias_fixture)
    cache = settings.CACHES[alias]
    func = f"{__name__}.tenant_key"
    cls = DjangoRedisStorage if "redis" in alias else DjangoMemcachedStorage
    with override_settings(CACHES={**settings.CACHES, "p": {**cache, "KEY_FUNCTION": func}}):
        store = cls("p")
        try:
            TENANT[0] = "a"
            assert store._names(["qs:e:k"]) == ["a::1:qs:e:k"]
            TENANT[0] = "b"
            assert store._names(["qs:e:k"]) == ["b::1:qs:e:k"]
            store.set("qs:e:k", b"b's", 60)
            TENANT[0] = "a"
            assert store.get_many(["qs:e:k"]) == [None]
        finally:
            TENANT[0] = "a"
            store.close()
    plain = cls(alias)  # Django's own key function: remembered, and the same names
    name = caches[alias].make_and_validate_key("qs:e:k")
    assert plain._names(["qs:e:k"]) == plain._names(["qs:e:k"]) == [name]
    assert plain._name_memo == {"qs:e:k": name}
    plain.close()


def test_a_name_memcached_would_refuse_is_still_refused(memcached_cache_alias):
    cache = settings.CACHES[memcached_cache_alias]
    with override_settings(CACHES={**settings.CACHES, "p": {**cache, "KEY_PREFIX": "a b"}}):
        store = DjangoMemcachedStorage("p")
        with pytest.raises(InvalidCacheKey):
            store._names(["qs:e:k"])


# -- Django's RedisCache through the lane: the same answers as through the client ----------


@pytest.fixture
def redis_pair(redis_cache_alias, monkeypatch):
    """Two stores on copies of the alias with KEY_PREFIX "old" and "new":
    "new" on the lane, "old" on redis-py's client, as a custom pool class gets."""
    cache = settings.CACHES[redis_cache_alias]
    with override_settings(CACHES={**settings.CACHES, **{
            prefix: {**cache, "KEY_PREFIX": prefix} for prefix in ("old", "new")}}):
        old, new = DjangoRedisStorage("old"), DjangoRedisStorage("new")
        assert new._connected()[1] is not None
        with monkeypatch.context() as m:
            m.setattr(_django_raw, "_lane", lambda client: None)
            assert old._connected()[1] is None  # kept per thread and pool
        yield old, new, caches["new"]._cache.get_client(write=True)


def test_django_redis_lane_answers_as_the_client_does(redis_pair):
    assert differences(*redis_pair, seed=23, counters=True) == []


def test_positive_control_a_lane_that_overwrites_is_caught(redis_pair, monkeypatch):
    old, new, raw = redis_pair

    def adds_without_nx(self, mapping, timeout):  # a stamp added over another
        return [command[:-1] for command in DjangoRedisStorage._adds(self, mapping, timeout)]

    monkeypatch.setattr(new, "_adds", adds_without_nx.__get__(new))
    assert differences(old, new, raw, seed=23, counters=True) != []


@pytest.mark.parametrize(("options", "lane"), [
    ({}, True),
    ({"protocol": 3}, False),  # push messages may come between replies
    ({"pool_class": "redis.BlockingConnectionPool"}, False),  # waits for a connection
])
def test_django_redis_lane_only_where_it_answers_as_the_client(
        redis_cache_alias, options, lane):
    cache = settings.CACHES[redis_cache_alias]
    with override_settings(CACHES={**settings.CACHES, "other": {
            **cache, "OPTIONS": {**cache["OPTIONS"], **options}}}):
        store = DjangoRedisStorage("other")
        assert (store._connected()[1] is not None) == lane
        store.set("qs:e:x", b"v", 60)
        assert store.get_many(["qs:e:x", "qs:t:none"]) == [b"v", None]
        store.delete_many(["qs:e:x"])
