"""A real 3-master Redis Cluster: reads hit, writes invalidate, across nodes."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

import querystash
from querystash.testing import wait_for_store
from tests.testapp.models import Author, Book, Tag

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cluster(redis_cluster):
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def data():
    authors = [Author.objects.create(name=f"A{i}", age=20 + i) for i in range(10)]
    for i in range(30):
        Book.objects.create(title=f"B{i}", author=authors[i % 10], status=i % 3)
    return authors


def section(cluster, **extra):
    return {"cluster_nodes": cluster.addresses[:1], **extra}  # one seed finds the rest


def node_keys(cluster, rclient):
    return {n.port: rclient(n.port).keys("*") for n in cluster.nodes}


def test_reads_hit_and_entries_spread_over_nodes(data, cluster, use_redis, counts, rclient):
    with use_redis(**section(cluster)):
        for _ in range(2):
            for i in range(30):
                assert list(Book.objects.filter(pk=data[0].pk + i).values_list("title")) == \
                    list(Book.objects.nocache().filter(pk=data[0].pk + i).values_list("title"))
    assert counts("testapp.Book")["hits"] == 30
    keys = node_keys(cluster, rclient)
    stamps = {port for port, ks in keys.items() if any(k.startswith(b"{qs:t:}") for k in ks)}
    assert len(stamps) == 1  # every stamp in one slot
    with_entries = [port for port, ks in keys.items() if any(b":e:" in k for k in ks)]
    assert len(with_entries) == 3  # entries spread over the three masters


def test_writes_invalidate_across_nodes(data, cluster, use_redis, counts):
    def read():
        return (list(Book.objects.filter(status=1).order_by("pk").values_list("pk", "title")),
                Author.objects.filter(books__status=2).distinct().count(),
                list(Tag.objects.values_list("name", flat=True)))

    def truth():
        return (list(Book.objects.nocache().filter(status=1).order_by("pk")
                     .values_list("pk", "title")),
                Author.objects.nocache().filter(books__status=2).distinct().count(),
                list(Tag.objects.nocache().values_list("name", flat=True)))

    with use_redis(**section(cluster)):
        assert read() == truth()
        assert read() == truth()
        hits = counts("")["hits"]
        assert hits >= 3
        Book.objects.filter(status=1).update(status=2)
        assert read() == truth()
        Tag.objects.create(name="new")
        assert read() == truth()
        Book.objects.filter(pk=data[0].pk).delete()
        assert read() == truth()
        Author.objects.filter(pk=data[1].pk).delete()  # cascades to books
        assert read() == truth()
        querystash.invalidate_all()
        assert read() == truth()
        assert read() == truth()
    assert counts("")["hits"] > hits


def test_hit_is_one_mget_per_slot(data, cluster, use_redis, monitor):
    with use_redis(**section(cluster)) as rt:
        list(Book.objects.all())
        monitors = [monitor(n.port) for n in cluster.nodes]
        for m in monitors:
            m.__enter__()
        try:
            list(Book.objects.all())
        finally:
            for m in monitors:
                m.__exit__(None, None, None)
        commands = [c for m in monitors for c in m.commands]
        assert all(c.startswith("MGET ") for c in commands), commands
        assert 1 <= len(commands) <= 2  # entry's slot and the stamps' slot
        stamp_slot = rt.storage.client.keyslot("{qs:t:}x")
        assert all(rt.storage.client.keyslot(k) == stamp_slot
                   for c in commands for k in c.split()[1:] if k.startswith("{qs:t:}"))


def test_many_tags_one_del_on_the_stamp_node(data, cluster, use_redis, monitor):
    with use_redis(**section(cluster)) as rt:
        list(Book.objects.all())
        port = int(rt.storage.client.get_node_from_key("{qs:t:}x").port)
        with monitor(port) as m:
            querystash.invalidate_models("testapp.Book", "testapp.Author", "testapp.Tag")
        dels = m.named("DEL")
        assert len(dels) == 1 and len(dels[0].split()) >= 4, m.commands


def test_dogpile_in_cluster(data, cluster, use_redis, counts):
    with use_redis(**section(cluster, dogpile={"lease_ms": 1000, "wait_ms": 50})) as rt:
        for _ in range(3):
            assert list(Book.objects.values_list("pk")) == \
                list(Book.objects.nocache().values_list("pk"))
        Book.objects.update(status=0)
        assert list(Book.objects.values_list("status", flat=True)) == [0] * 30
        assert rt.storage._leases.taken >= 2
    assert counts("testapp.Book")["hits"] == 2


def test_stats_sum_the_primaries(data, cluster, use_redis):
    with use_redis(**section(cluster)):
        list(Book.objects.all())
        out = io.StringIO()
        call_command("querystash", "stats", stdout=out)
    text = out.getvalue()
    assert "redis: cluster" in text
    assert "redis keys (all primaries): 3" in text
    assert text.count("memory used") == 4  # three primaries and the total


def test_node_killed_goes_to_database_then_recovers(data, cluster, use_redis, counts):
    """A master down (no replica to take over): its slots fail, the database
    answers; after a restart, reads are correct."""
    victim = cluster.nodes[2]
    with use_redis(**section(cluster, socket_timeout=0.5)):
        assert list(Book.objects.values_list("pk", "status")) == \
            list(Book.objects.nocache().values_list("pk", "status"))
        victim.kill()
        for i in range(10):
            Book.objects.filter(pk=data[0].pk + i).update(status=5)
            assert list(Book.objects.values_list("pk", "status")) == \
                list(Book.objects.nocache().values_list("pk", "status"))
        victim.start()  # nodes-P.conf kept: it rejoins with its slots, empty
        assert wait_for_store()  # the outage's debt paid: the store is used again
        for _ in range(3):
            Book.objects.filter(pk=data[0].pk).update(status=6)
            assert list(Book.objects.values_list("pk", "status")) == \
                list(Book.objects.nocache().values_list("pk", "status"))


def test_incr_many_across_slots(cluster, use_redis):
    # The site-wide counters: one pipeline, split by node.
    with use_redis(**section(cluster)) as rt:
        keys = [f"qs:stats:v1:k{i}" for i in range(20)]
        rt.storage.incr_many(dict.fromkeys(keys, 2))
        rt.storage.incr_many(dict.fromkeys(keys, 1))
        assert rt.storage.get_many(keys) == [b"3"] * 20
