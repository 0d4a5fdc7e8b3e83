"""Site-wide stats (``_sitestats``): processes add their counters to the store,
``manage.py querystash stats`` shows the sums.

Real servers throughout; several tests run real processes of a site
(``tests/sitestats_worker.py``) and check that the command's figures are
exactly the sum of what each process counted. The test process itself has no
background flushing (``tests/fixtures.py``): the in-process tests flush by hand.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings

import querystash
from querystash import _runtime, _sitestats
from querystash._django_cache import DjangoCacheStorage
from querystash._localstore import LocalStorage
from querystash.storage import Storage, counts_site_wide
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
STORES = ["django-redis", "django-memcached", "redis", "memcached"]


@pytest.fixture(autouse=True)
def fresh_flusher():
    _sitestats.flusher.forget()
    yield
    _sitestats.flusher.forget()


@pytest.fixture
def site(request, redis_server, memcached_server):
    """querystash on one shared store (param: a STORES name), emptied; yields
    (store name, server url)."""
    store = request.param
    server = redis_server if "redis" in store else memcached_server
    server.ensure_running()
    url = server.url
    config = dict(settings.QUERYSTASH)
    caches = dict(settings.CACHES)
    if store.startswith("django-"):
        backend = {"django-redis": "django.core.cache.backends.redis.RedisCache",
                   "django-memcached": "django.core.cache.backends.memcached.PyMemcacheCache"}
        caches["site"] = {"BACKEND": backend[store], "LOCATION": url}
        config["django"] = {"cache": "site"}
    elif store == "redis":
        config.update(STORAGE="redis", redis={"url": url, "socket_timeout": 2})
    else:
        config.update(STORAGE="memcached", memcached={"servers": [url], "timeout": 2})
    with override_settings(CACHES=caches, QUERYSTASH=config):
        _empty(server)
        rt = _runtime.current
        assert rt.enabled and _sitestats.unavailable(rt) is None, rt.problems
        yield store, url


def _empty(server) -> None:
    if "Redis" in type(server).__name__:
        import redis

        redis.Redis.from_url(server.url).flushall()
    else:
        from pymemcache.client.base import Client

        host, port = server.url.rsplit(":", 1)
        client = Client((host, int(port)))
        client.flush_all(noreply=False)
        client.close()


@pytest.fixture
def books():
    author = Author.objects.create(name="author 0")
    Book.objects.create(title="One", author=author)
    Book.objects.create(title="Two", author=author)


def read_books():
    return list(Book.objects.values_list("title", flat=True))


def command(*args) -> str:
    out = io.StringIO()
    call_command("querystash", "stats", *args, stdout=out)
    return out.getvalue()


def tables(output: str) -> dict[str, dict[str, dict[str, int]]]:
    """The command's tables: {"model"/"memoized": {label: {counter: n}}},
    zero counters left out (as the store leaves them out)."""
    found: dict = {}
    header = None
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in ("model", "memoized") and words[-1] == "hit%":
            header, kind = words[1:-1], words[0]
            found.setdefault(kind, {})
            continue
        if header is None or len(words) != len(header) + 2:
            header = None
            continue
        label = "" if words[0] == "(store)" else words[0]
        counts = {f: int(n) for f, n in zip(header, words[1:-1], strict=True) if int(n)}
        found[kind][label] = counts
    return found


def local() -> dict:
    """This process's counters, as the command's tables."""
    return {"model": _nonzero(querystash.stats()), "memoized": _nonzero(querystash.memoize_stats(),
                                                                          memo=True)}


def _nonzero(counts: dict, memo: bool = False) -> dict:
    out = {}
    for label, fields in counts.items():
        kept = {f: n for f, n in fields.items() if n and not (memo and f.startswith("veto: "))}
        if kept:
            out[label] = kept
    return out


def added(*parts: dict) -> dict:
    total: dict = {}
    for part in parts:
        for kind, labels in part.items():
            kind = "memoized" if kind == "memo" else kind
            for label, fields in labels.items():
                for field, n in fields.items():
                    if field.startswith("veto: ") or not n:
                        continue
                    row = total.setdefault(kind, {}).setdefault(label, Counter())
                    row[field] += n
    return {kind: {label: dict(c) for label, c in labels.items()}
            for kind, labels in total.items()}


# -- the contract: incr_many on every store ---------------------------------------------


@pytest.fixture(params=["local", "django-redis", "django-memcached", "django-generic"])
def storage(request, redis_cache_alias, memcached_cache_alias):
    if request.param == "local":
        return LocalStorage("sitestats-contract")
    from querystash.default_storage import for_alias

    if request.param == "django-redis":
        return for_alias(redis_cache_alias)
    if request.param == "django-memcached":
        return for_alias(memcached_cache_alias)
    return DjangoCacheStorage(redis_cache_alias)  # Django's own incr / add


def test_incr_many_adds_atomically(storage):
    assert counts_site_wide(storage)
    storage.incr_many({"c:a": 2, "c:b": 5})
    storage.incr_many({"c:a": 3})
    assert [int(v) for v in storage.get_many(["c:a", "c:b"])] == [5, 5]
    assert storage.get_many(["c:none"]) == [None]

    # Threads adding to the same keys at once, each its own client: no
    # increment lost (the key is created by one of them).
    def add():
        for _ in range(50):
            storage.incr_many({"c:race": 1, "c:a": 1})

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [int(v) for v in storage.get_many(["c:race", "c:a"])] == [200, 205]


def test_a_storage_without_incr_many_keeps_no_site_wide_figures():
    class Bare(Storage):
        name = "bare"

    assert not counts_site_wide(Bare())
    assert counts_site_wide(LocalStorage("x"))


# -- in this process: flush, read, keep, reset -------------------------------------------


@pytest.mark.parametrize("site", STORES, indirect=True)
def test_flushes_add_up_and_the_command_shows_them(site, books):
    read_books()
    read_books()
    Author.objects.filter(name="x").exists()
    rt = _runtime.current
    assert _sitestats.flusher.flush(rt) == "sent"
    first = local()
    read_books()
    assert _sitestats.flusher.flush(rt) == "sent"
    assert _sitestats.flusher.flush(rt) == "nothing"  # nothing new: no store call
    output = command()
    assert "site-wide" in output and "ONLY THIS PROCESS" not in output
    assert tables(output)["model"] == local()["model"]
    assert first["model"]["testapp.Book"]["hits"] + 1 == local()["model"]["testapp.Book"]["hits"]
    assert "2 flushes" in output


def test_the_in_process_store_says_only_this_process(books):
    read_books()
    rt = _runtime.current
    assert "not shared" in _sitestats.flusher.flush(rt)
    output = command()
    assert "ONLY THIS PROCESS'S FIGURES" in output and "not shared" in output
    assert tables(output)["model"] == local()["model"]
    with pytest.raises(CommandError, match="not shared"):
        command("--reset")


@pytest.mark.parametrize("site", ["django-redis"], indirect=True)
def test_nothing_flushed_yet_is_said(site):
    output = command()
    assert "ONLY THIS PROCESS'S FIGURES" in output and "nothing flushed to the store yet" in output


def _failed_flush_then_recovery(redis_server) -> tuple[dict, dict]:
    """Count, flush, count more, fail a flush, count more, flush again:
    (what this process counted, what the store holds).

    The failure is redis refusing INCRBY (an ACL): nothing of the batch is
    applied. (A flush that times out may have been applied after all, and
    is then counted twice: docs/operations.md says so.)"""
    import redis

    admin = redis.Redis.from_url(redis_server.url)
    rt = _runtime.current
    read_books()
    assert _sitestats.flusher.flush(rt) == "sent"
    read_books()
    admin.acl_setuser("default", enabled=True, nopass=True, commands=["-incrby"])
    try:
        assert _sitestats.flusher.flush(rt) == "failed"
    finally:
        admin.acl_setuser("default", enabled=True, nopass=True, commands=["+@all"],
                          keys=["*"], channels=["*"])
    read_books()
    assert _sitestats.flusher.flush(rt) == "sent"
    return local()["model"], tables(command()).get("model", {})


@pytest.mark.parametrize("site", ["redis"], indirect=True)
def test_a_failed_flush_keeps_its_batch(site, books, redis_server):
    counted, stored = _failed_flush_then_recovery(redis_server)
    assert stored == counted


@pytest.mark.parametrize("site", ["redis"], indirect=True)
def test_positive_control_a_flush_that_drops_its_batch_is_caught(site, books, redis_server,
                                                                  monkeypatch):
    real = _sitestats.Flusher._flush

    def dropping(self, rt):
        outcome = real(self, rt)
        if outcome == "failed":
            self.pending.clear()  # the planted bug: a failed batch is forgotten
        return outcome

    monkeypatch.setattr(_sitestats.Flusher, "_flush", dropping)
    counted, stored = _failed_flush_then_recovery(redis_server)
    assert stored != counted
    assert stored["testapp.Book"]["hits"] < counted["testapp.Book"]["hits"]


@pytest.mark.parametrize("site", ["django-redis"], indirect=True)
def test_no_flush_while_the_breaker_holds_the_store(site, books, monkeypatch):
    rt = _runtime.current
    read_books()
    calls = []
    storage_type = type(rt.storage)

    def counted(method, real):
        def call(self, *args):
            calls.append(method)
            return real(self, *args)
        return call

    for method in ("incr_many", "get_many", "add_many"):
        monkeypatch.setattr(storage_type, method, counted(method, getattr(storage_type, method)))
    monkeypatch.setattr(type(rt.breaker), "usable", property(lambda self: False))
    assert _sitestats.flusher.flush(rt) == "store out"
    assert calls == [] and _sitestats.flusher.pending  # kept, and the store left alone
    monkeypatch.undo()
    assert _sitestats.flusher.flush(rt) == "sent"
    assert tables(command())["model"] == local()["model"]


@pytest.mark.parametrize("site", ["memcached"], indirect=True)
def test_reset_stats_in_a_process_still_sends_what_it_counted(site, books):
    rt = _runtime.current
    read_books()
    read_books()
    before = local()["model"]
    querystash.reset_stats()
    read_books()
    after = local()["model"]
    assert _sitestats.flusher.flush(rt) == "sent"
    assert tables(command())["model"] == added({"model": before}, {"model": after})["model"]


@pytest.mark.parametrize("site", ["memcached"], indirect=True)
def test_reset_zeroes_the_site_wide_counters(site, books):
    rt = _runtime.current
    read_books()
    assert _sitestats.flusher.flush(rt) == "sent"
    assert "testapp.Book" in tables(command())["model"]
    assert "zeroed" in command("--reset")
    assert "nothing flushed to the store yet" in command()
    read_books()
    assert _sitestats.flusher.flush(rt) == "sent"
    book = tables(command())["model"]["testapp.Book"]
    assert book == {"hits": 1}  # only what came after the reset


@pytest.mark.parametrize("site", ["memcached", "redis"], indirect=True)
def test_memoized_labels_of_any_shape_are_listed(site, books):
    rt = _runtime.current

    @querystash.memoize(name="a label with spaces, é and: colons")
    def titles():
        return read_books()

    titles()
    titles()
    assert _sitestats.flusher.flush(rt) == "sent"
    site_memo = {}
    # The command's table splits on spaces: read the figures themselves.
    figures = _sitestats.read(rt, [])
    site_memo = figures.counts["memo"]["a label with spaces, é and: colons"]
    assert site_memo == {"hits": 1, "misses": 1, "fills": 1}
    assert "a label with spaces, é and: colons" in command()


def test_the_thread_starts_only_when_flushing_is_on(monkeypatch):
    early = _sitestats._thread  # started before tests/fixtures.py turned flushing off
    if early is not None and early.is_alive():
        assert _sitestats.flush_now(30)  # wakes it: no flush, and it ends
        early.join(30)
        assert not early.is_alive()
    monkeypatch.setattr(_sitestats, "background", True)
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "STATS_FLUSH_SECONDS": 0}):
        _sitestats.start()
        assert _sitestats._thread is None or not _sitestats._thread.is_alive()
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "STATS_FLUSH_SECONDS": 60}):
        _sitestats.start()  # as a change of the setting does (_install)
        thread = _sitestats._thread
        assert thread is not None and thread.is_alive()
        assert _sitestats.flush_now(30)  # the thread answers (the in-process store: no flush)
        _sitestats.background = False
        before = _sitestats.flusher.sent
        assert _sitestats.flush_now(30)  # wakes it: it sees it must stop, flushing nothing
        assert _sitestats.flusher.sent == before
        thread.join(30)
        assert not thread.is_alive()


def test_the_setting_is_validated():
    from django.core.checks import run_checks

    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "STATS_FLUSH_SECONDS": -1}):
        messages = [m for m in run_checks(tags=["querystash"]) if "STATS_FLUSH_SECONDS" in m.msg]
    assert messages and messages[0].id == "querystash.E003"


# -- real processes of a site ---------------------------------------------------------


def run_workers(store: str, url: str, mode: str, processes: int = 2, reads: int = 5,
                plant: str = "") -> list[dict]:
    """Start the processes at once, wait for them; each one's counters."""
    args = [sys.executable, "-m", "tests.sitestats_worker", connection.settings_dict["NAME"],
            store, url, str(reads), mode, plant]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return reports


@pytest.mark.parametrize("site", STORES, indirect=True)
def test_two_processes_add_up_exactly(site, books):
    store, url = site
    reports = run_workers(store, url, "exit")
    expected = added(*reports)
    book = expected["model"]["testapp.Book"]
    assert book["hits"] + book["misses"] >= 10  # 5 reads in each process (and titles())
    output = command()
    assert tables(output) == expected, output
    assert "2 flushes" in output


@pytest.mark.parametrize("site", ["redis"], indirect=True)
@pytest.mark.parametrize("plant", ["", "slow_register"])
def test_the_background_thread_flushes(site, books, plant):
    """Each process ends as soon as its thread has sent its counts: the
    names of the memoized functions it counted are listed by then too, even
    when claiming their registry slots is slow."""
    store, url = site
    reports = run_workers(store, url, "thread", plant=plant)
    assert tables(command()) == added(*reports)


@pytest.mark.parametrize("site", ["django-redis"], indirect=True)
def test_a_forked_child_flushes_its_own_counts_only(site, books):
    store, url = site
    reports = run_workers(store, url, "fork", processes=1)
    assert len(reports) == 2  # the parent's counts at the fork, the child's after it
    assert tables(command()) == added(*reports)


@pytest.mark.parametrize("site", ["django-redis"], indirect=True)
def test_positive_control_a_child_resending_its_parents_counts_is_caught(site, books):
    store, url = site
    reports = run_workers(store, url, "fork", processes=1, plant="fork")
    site_books = tables(command())["model"]["testapp.Book"]
    expected = added(*reports)["model"]["testapp.Book"]
    parent = reports[0]["model"]["testapp.Book"]
    assert site_books != expected
    assert site_books["hits"] == expected["hits"] + parent.get("hits", 0)  # sent twice
