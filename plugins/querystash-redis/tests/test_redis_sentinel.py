"""Sentinel: master discovery, and failover (forced, and master killed) with
no stale rows afterwards, even when the old master's invalidations were lost."""

from __future__ import annotations

import time

import pytest

from querystash.testing import wait_for_store
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sentinel(redis_sentinel, rclient):
    setup = redis_sentinel
    for server in setup.servers():
        server.ensure_running()
    rclient(setup.master_port()).flushall()
    return setup


@pytest.fixture
def data():
    alice = Author.objects.create(name="Alice")
    for i in range(5):
        Book.objects.create(title=f"B{i}", author=alice)
    return alice


def section(setup, **extra):
    return {"sentinels": [["127.0.0.1", setup.sentinel.port]],
            "service_name": setup.service, **extra}


def books():
    return list(Book.objects.order_by("pk").values_list("pk", "title", "status"))


def truth():
    return list(Book.objects.nocache().order_by("pk").values_list("pk", "title", "status"))


def wait_for_new_master(setup, old_port, rclient, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            port = setup.master_port()
            if port != old_port and rclient(port).info("replication")["role"] == "master":
                return port
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError("sentinel did not promote a new master")


def test_reads_and_writes_through_sentinel(data, sentinel, use_redis, counts, rclient):
    with use_redis(**section(sentinel)) as rt:
        assert books() == truth()
        assert books() == truth()
        Book.objects.filter(title="B1").update(status=4)
        assert books() == truth()
        assert books() == truth()
        assert rt.storage.connection.master_address() == ("127.0.0.1", sentinel.master_port())
    assert counts("testapp.Book")["hits"] == 2
    assert rclient(sentinel.master_port()).dbsize() >= 3


def test_forced_failover_finds_new_master_and_drops_lost_invalidations(
    data, sentinel, use_redis, counts, rclient
):
    old = sentinel.master_port()
    with use_redis(**section(sentinel)) as rt:
        assert books() == truth()
        assert books() == truth()
        r = rclient(old)
        snapshot = {k: r.dump(k) for k in r.keys("*")}  # entries and stamps, still valid
        Book.objects.filter(title="B2").update(status=8)  # deletes the book stamp
        rclient(sentinel.sentinel.port).sentinel_failover(sentinel.service)
        new = wait_for_new_master(sentinel, old, rclient)
        # Replication is asynchronous: pretend the deletion never reached the
        # new master (it is back there, with the old entry).
        n = rclient(new)
        for key, value in snapshot.items():
            n.restore(key, 600_000, value, replace=True)
        until = time.monotonic() + 1.5  # the plugin asks Sentinel once a second
        while time.monotonic() < until:  # through the switch: never stale, never an exception
            assert books() == truth()
            time.sleep(0.02)
        assert rt.storage.connection.master_address() == ("127.0.0.1", new)
        assert rt.storage._failovers == 1
        hits = counts("testapp.Book")["hits"]
        assert books() == truth()
        assert counts("testapp.Book")["hits"] == hits + 1  # caching again, on the new master


def test_master_killed_failover(data, sentinel, use_redis, counts, rclient):
    old = sentinel.master_port()
    victim = sentinel.by_port(old)
    with use_redis(**section(sentinel)) as rt:
        assert books() == truth()
        assert books() == truth()
        victim.kill()
        Book.objects.filter(title="B3").update(status=6)  # lost: the debt is kept
        deadline = time.monotonic() + 20
        new = None
        while time.monotonic() < deadline:  # reads all along the outage
            assert books() == truth()
            try:
                port = sentinel.master_port()
            except Exception:
                port = old
            if port != old:
                new = port
                break
            time.sleep(0.05)
        assert new is not None, "no failover"
        wait_for_new_master(sentinel, old, rclient)
        assert wait_for_store()  # an outage the failover caused is over
        for _ in range(20):
            assert books() == truth()
            time.sleep(0.02)
        Book.objects.filter(title="B4").update(status=7)
        assert books() == truth()
        assert books() == truth()
        assert rt.storage.connection.master_address() == ("127.0.0.1", new)
    assert counts("testapp.Book")["hits"] >= 2
    assert counts("")["errors"] >= 1
    # the old master comes back as a replica of the new one
    victim.extra_args = ["--replicaof", "127.0.0.1", str(new)]
    victim.start()


def test_wait_replicas_makes_invalidations_durable(data, sentinel, use_redis, rclient, counts):
    with use_redis(**section(sentinel, wait_replicas=1)):
        assert books() == truth()
        Book.objects.filter(title="B0").update(status=2)
        assert books() == truth()
        assert counts("").get("errors", 0) == 0  # the replica acknowledged every DEL
    with use_redis(**section(sentinel, wait_replicas=5)):
        Book.objects.filter(title="B0").update(status=3)  # only 1 replica: reported
        assert books() == truth()
    assert counts("")["errors"] >= 1
