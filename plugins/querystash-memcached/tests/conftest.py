"""Real memcached processes for querystash-memcached's tests.

The session's ``memcached_server`` (tests/fixtures.py) for one server; extra
throwaway servers (``querystash.testing.servers.MemcachedServer``) for pools and tiny
memory limits. A binary missing: skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
from contextlib import ExitStack, contextmanager

import pytest
from django.conf import settings
from django.test import override_settings
from pymemcache.client.base import Client
from querystash_memcached import MemcachedStorage

from querystash.testing import problems, runtime, wait_for_store
from querystash.testing.servers import MemcachedServer
from tests.testapp.models import Author, Book

IN_CI = os.environ.get("CI", "").lower() == "true"


def need_memcached() -> None:
    if shutil.which("memcached") is None:
        msg = "memcached is not installed: apt-get install memcached"
        if IN_CI:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def flush(url: str) -> None:
    host, port = url.rsplit(":", 1)
    client = Client((host, int(port)), connect_timeout=2, timeout=2)
    try:
        client.flush_all(noreply=False)
    finally:
        client.close()


@contextmanager
def using(servers: list[str], **section):
    """Make querystash use memcached on ``servers``; yields the live runtime
    (``querystash.RuntimeHandle``)."""
    top = {k: section.pop(k) for k in list(section) if k.isupper()}
    value = {**settings.QUERYSTASH, **top, "STORAGE": "memcached",
             "memcached": {"servers": servers, "timeout": 0.3, "connect_timeout": 0.3,
                           **section}}
    with override_settings(QUERYSTASH=value):
        rt = runtime()
        assert rt.enabled, problems()
        assert isinstance(rt.storage, MemcachedStorage)
        yield rt


@pytest.fixture
def mc(memcached_server):
    """querystash on the session's memcached server, emptied first."""
    memcached_server.ensure_running()
    flush(memcached_server.url)
    with using([memcached_server.url]) as rt:
        yield rt


@pytest.fixture
def pool3():
    """Three fresh memcached servers (stopped afterwards)."""
    need_memcached()
    with ExitStack() as stack:
        yield [stack.enter_context(MemcachedServer()) for _ in range(3)]


@pytest.fixture
def data():
    alice = Author.objects.create(name="Alice", age=35)
    bob = Author.objects.create(name="Bob", age=50)
    Book.objects.create(title="One", author=alice)
    Book.objects.create(title="Two", author=bob)
    return {"alice": alice, "bob": bob}


def books(manager) -> list:
    return list(manager.order_by("pk").values_list("pk", "title", "status"))


def cached() -> list:
    return books(Book.objects)


def truth() -> list:
    return books(Book.objects.nocache())


def wait_out_outage(rt) -> None:
    """The outage's debt paid by the background thread: the store is used again."""
    assert wait_for_store(), "the store's debt was never paid"
    assert rt.store_usable()


def layout(servers: list[str], tag: str, other: str) -> str:
    """A KEY_PREFIX under which the stamps of ``tag`` and ``other`` live on
    different servers of the ring."""
    probe = MemcachedStorage(servers=servers)
    for i in range(100):
        prefix = f"qs{i}"
        if probe.server_for(f"{prefix}:t:{tag}") is not probe.server_for(f"{prefix}:t:{other}"):
            return prefix
    raise AssertionError("no prefix separates the two stamps")
