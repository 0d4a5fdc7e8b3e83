"""memcached down, slow, partitioned or restarted empty: the database answers,
no exception reaches the caller, and nothing stale is served afterwards."""

from __future__ import annotations

import logging
from contextlib import nullcontext

import pytest
from pymemcache.client.base import Client

from querystash.testing import without_outage_debts
from querystash.testing.relay import Relay
from querystash.testing.servers import MemcachedServer
from tests.testapp.models import Author, Book

from .conftest import cached, layout, truth, using, wait_out_outage

pytestmark = pytest.mark.django_db(transaction=True)


def varied_reads(nocache: bool = False) -> list:
    def q(model):
        return model.objects.nocache() if nocache else model.objects

    return [
        books(q(Book)),
        q(Book).count(),
        q(Book).filter(title="One").exists(),
        list(q(Book).filter(author__name="Bob").values_list("title", flat=True)),
        q(Author).get(name="Alice").age,
        *[list(q(Book).filter(pk__gt=i).values_list("pk")) for i in range(5)],
    ]


def books(manager) -> list:
    return list(manager.order_by("pk").values_list("pk", "title", "status"))


def prime(counts) -> list:
    first = cached()
    hits = counts("testapp.Book").get("hits", 0)
    assert cached() == first
    assert counts("testapp.Book")["hits"] == hits + 1, "the second read should be a hit"
    return first


def errors_logged(caplog) -> list:
    return [r for r in caplog.records if r.name == "querystash" and r.levelno >= logging.ERROR]


# -- one server ---------------------------------------------------------------------


def test_server_killed_reads_and_writes_go_to_the_database(
    data, mc, memcached_server, counts, caplog
):
    old = prime(counts)
    caplog.set_level(logging.WARNING, logger="querystash")
    memcached_server.kill()
    for _ in range(3):
        assert varied_reads() == varied_reads(nocache=True)
    Book.objects.filter(title="One").update(title="Uno")  # its invalidation is lost
    assert cached() == truth() != old
    assert counts("").get("errors", 0) >= 1
    assert len(errors_logged(caplog)) == 1  # logged once per outage, not per query
    memcached_server.start()  # back, empty
    wait_out_outage(mc)
    assert cached() == truth() != old
    assert cached() == truth()
    assert varied_reads() == varied_reads(nocache=True)
    assert counts("testapp.Book")["hits"] >= 2  # caching works again


def test_server_paused_times_out_to_the_database(data, mc, memcached_server, counts):
    old = prime(counts)
    memcached_server.pause()
    try:
        Book.objects.filter(title="One").update(title="Uno")
        assert cached() == truth() != old
        assert counts("").get("errors", 0) >= 1
        assert not mc.store_usable()  # one timeout, then no request calls it
    finally:
        memcached_server.resume()
    wait_out_outage(mc)
    # The lost deletion may or may not have reached the server: either way
    # the debt (the global stamp) makes the old entry a miss.
    assert cached() == truth() != old


def test_server_never_up_at_start(data, counts):
    server = MemcachedServer()  # a free port nobody listens on
    with using([server.url]) as rt:
        assert varied_reads() == varied_reads(nocache=True)
        assert counts("").get("errors", 0) >= 1
        assert rt.enabled  # a store that is down is not a configuration problem


# -- a pool of three -------------------------------------------------------------------


def test_pool_of_three_one_killed_mid_test_then_back_empty(data, pool3, counts):
    urls = [s.url for s in pool3]
    prefix = layout(urls, "testapp_book", "*")
    with using(urls, KEY_PREFIX=prefix) as rt:
        old = prime(counts)
        varied_reads()
        victim = rt.storage.server_for(f"{prefix}:t:testapp_book").label
        server = pool3[urls.index(victim)]
        server.kill()
        for _ in range(3):
            assert varied_reads() == varied_reads(nocache=True)  # no exception
        Book.objects.filter(title="One").update(title="Uno")  # stamp's server is dead
        Author.objects.filter(name="Alice").update(age=36)
        assert varied_reads() == varied_reads(nocache=True)
        assert counts("").get("errors", 0) >= 1
        server.restart()  # same port, empty
        wait_out_outage(rt)
        for _ in range(3):
            assert varied_reads() == varied_reads(nocache=True)
        assert cached() != old
        hits = counts("testapp.Book").get("hits", 0)
        cached()
        assert counts("testapp.Book")["hits"] == hits + 1  # the pool caches again


def test_pool_never_moves_a_dead_servers_keys_to_the_survivors(data, pool3, counts):
    urls = [s.url for s in pool3]
    with using(urls) as rt:
        keys = [f"k{i}" for i in range(100)]
        before = {k: rt.storage.server_for(k).label for k in keys}
        pool3[0].kill()
        for _ in range(3):
            with pytest.raises(Exception):  # noqa: B017
                rt.storage.get_many(keys)
        assert {k: rt.storage.server_for(k).label for k in keys} == before


def test_partition_that_keeps_the_stamp_serves_nothing_stale(data, pool3, counts):
    """The worst case for a pool: the server holding a table's stamp is cut
    off (not restarted) while that table is written, so the deletion never
    arrives and the old stamp is still there when the network heals."""
    assert _partition(pool3, counts, forgive_debt=False) == "fresh"


def test_partition_positive_control_without_the_debt_it_would_be_stale(data, pool3, counts):
    """Shows the scenario above really is a hazard: if the core forgot the
    lost deletion, the old rows would be served."""
    assert _partition(pool3, counts, forgive_debt=True) == "stale"


def _partition(pool3, counts, *, forgive_debt: bool) -> str:
    proxy = Relay(pool3[0].address)  # cut like a network partition
    try:
        urls = [proxy.url, pool3[1].url, pool3[2].url]
        prefix = next(p for i in range(200)
                      if _places(urls, p := f"qs{i}", "testapp_book", proxy.url, "*"))
        with using(urls, KEY_PREFIX=prefix) as rt:
            old = prime(counts)
            stamp = f"{prefix}:t:testapp_book"
            held = rt.storage.server_for(stamp).run(Client.get, rt.storage.key(stamp))
            with without_outage_debts() if forgive_debt else nullcontext():
                proxy.cut()  # forgive_debt: the planted bug, a breaker that never owes
                Book.objects.filter(title="One").update(title="Uno")  # deletion lost
                assert cached() == truth() != old
                assert rt.store_usable() == forgive_debt
                proxy.heal()
            wait_out_outage(rt)
            # the server kept the old stamp...
            assert rt.storage.server_for(stamp).run(Client.get, rt.storage.key(stamp)) == held
            if cached() == old:
                return "stale"
            # ...and still the old entry is never served
            assert cached() == truth() != old
            assert varied_reads() == varied_reads(nocache=True)
            assert cached() == truth()
            return "fresh"
    finally:
        proxy.close()


def _places(urls, prefix, tag, url, other) -> bool:
    """True when ``tag``'s stamp is on ``url`` and ``other``'s is not."""
    from querystash_memcached import MemcachedStorage

    probe = MemcachedStorage(servers=urls)
    return (probe.server_for(f"{prefix}:t:{tag}").label == url
            and probe.server_for(f"{prefix}:t:{other}").label != url)

