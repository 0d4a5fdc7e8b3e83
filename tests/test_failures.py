"""Store failures and bad entries: the database answers, no exception reaches
the caller, errors are counted and logged once, lost invalidations are not
forgotten, and nothing planted in the store is ever unpickled."""

from __future__ import annotations

import logging
import pickle
import threading
import time
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.test import override_settings

from querystash import _codec, _runtime, _stores
from querystash.testing import forget_outage, wait_for_store
from tests.testapp.models import Author, Blob, Book

pytestmark = pytest.mark.django_db(transaction=True)

POSTGRES = connection.vendor == "postgresql"

# -- helpers ---------------------------------------------------------------------------------


@contextmanager
def store(alias):
    """Make querystash use the Django cache ``alias``; yields the live runtime."""
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, "django": {"cache": alias}}):
        rt = _runtime.current
        assert rt.enabled and rt.storage.alias == alias
        yield rt


@pytest.fixture
def on_redis(redis_cache_alias):
    with store(redis_cache_alias) as rt:
        yield rt


@pytest.fixture
def on_memcached(memcached_cache_alias):
    with store(memcached_cache_alias) as rt:
        yield rt


@pytest.fixture
def on_locmem():
    with store("default") as rt:
        yield rt


@pytest.fixture
def on_filebased(tmp_path):
    """A Django cache whose values are bytes the core signs (the in-process
    store a locmem alias becomes keeps objects: no bytes to corrupt)."""
    config = {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
              "LOCATION": str(tmp_path / "cache")}
    with override_settings(CACHES={**settings.CACHES, "files": config}), store("files") as rt:
        assert not rt.local
        yield rt


@pytest.fixture
def data():
    alice = Author.objects.create(name="Alice", age=35)
    bob = Author.objects.create(name="Bob", age=50)
    Book.objects.create(title="One", author=alice)
    Book.objects.create(title="Two", author=bob)
    return {"alice": alice, "bob": bob}


def books(m):
    return list(m.order_by("pk").values_list("pk", "title", "status"))


def cached():
    return books(Book.objects)


def truth():
    return books(Book.objects.nocache())


def hits(counts, model="testapp.Book"):
    return counts(model).get("hits", 0)


def prime(counts):
    first = cached()
    h = hits(counts)
    assert cached() == first
    assert hits(counts) == h + 1, "the second read should be a cache hit"
    return first


def varied_reads():
    """Different SQL each: get, count, exists, aggregate, filters, joins."""
    out = [cached(), Book.objects.count(), Book.objects.filter(title="One").exists()]
    out.append(list(Book.objects.filter(author__name="Bob").values_list("title", flat=True)))
    out.append(Author.objects.get(name="Alice").age)
    out += [list(Book.objects.filter(pk__gt=i).values_list("pk")) for i in range(5)]
    return out


def varied_truth():
    out = [
        truth(),
        Book.objects.nocache().count(),
        Book.objects.nocache().filter(title="One").exists(),
    ]
    out.append(
        list(Book.objects.nocache().filter(author__name="Bob").values_list("title", flat=True))
    )
    out.append(Author.objects.nocache().get(name="Alice").age)
    out += [list(Book.objects.nocache().filter(pk__gt=i).values_list("pk")) for i in range(5)]
    return out


class CallCounter:
    """Counts the store calls querystash makes (wraps the storage's methods),
    on this thread (the requests') and on every other (the background payer)."""

    METHODS = ("get_many", "add_many", "set", "delete_many")

    def __init__(self, monkeypatch, storage):
        self.thread = threading.get_ident()
        self.calls = {m: 0 for m in self.METHODS}
        self.elsewhere = 0
        for name in self.METHODS:
            original = getattr(storage, name)
            monkeypatch.setattr(storage, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def wrapper(*args, **kwargs):
            if threading.get_ident() == self.thread:
                self.calls[name] += 1
            else:
                self.elsewhere += 1
            return original(*args, **kwargs)

        return wrapper

    @property
    def total(self):
        return sum(self.calls.values())

    def around(self, fn):
        """(fn's result, the store calls this thread made during it)."""
        before = self.total
        result = fn()
        return result, self.total - before


def querystash_errors(caplog):
    return [r for r in caplog.records if r.name == "querystash" and r.levelno >= logging.ERROR]


def entry_keys(monkeypatch, rt):
    """Record the keys of entries querystash writes (the stamp keys aside)."""
    keys = []
    original = rt.storage.set

    def recording_set(key, value, timeout):
        keys.append(key)
        return original(key, value, timeout)

    monkeypatch.setattr(rt.storage, "set", recording_set)
    return keys


def wait_out_outage(rt):
    """The background thread paid the debt: the store is used again."""
    assert wait_for_store(), "the store's debt was never paid"
    assert rt.breaker.usable


# -- redis down ------------------------------------------------------------------------------


def test_redis_stopped_reads_fall_back_to_database(data, on_redis, redis_server, counts, caplog):
    prime(counts)
    redis_server.stop()
    caplog.set_level(logging.WARNING, logger="querystash")
    for _ in range(3):
        assert varied_reads() == varied_truth()
    assert counts("").get("errors", 0) >= 1
    errors = querystash_errors(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]


def test_redis_stopped_writes_do_not_raise(data, on_redis, redis_server, counts):
    prime(counts)
    redis_server.stop()
    Book.objects.create(title="Three", author=data["alice"])
    Book.objects.filter(title="One").update(status=5)
    Book.objects.filter(title="Two").delete()
    data["bob"].delete()
    assert cached() == truth()
    assert counts("").get("errors", 0) >= 1


def test_redis_restart_after_writes_during_outage(data, on_redis, redis_server, counts):
    old = prime(counts)
    redis_server.stop()
    Book.objects.filter(title="One").update(title="Uno")
    Book.objects.create(title="Three", author=data["alice"])
    assert cached() == truth() != old
    redis_server.start()  # same port, no data
    wait_out_outage(on_redis)
    assert cached() == truth() != old
    # the store is used again
    prime(counts)


def _lose_one_invalidation(rt, monkeypatch, counts):
    """Fill, then make a write whose stamp deletion fails once (the store
    keeps the old entry and stamps). Returns the rows cached before it."""
    old = prime(counts)
    original = rt.storage.delete_many
    failures = []

    def fail_once(keys):
        if not failures:
            failures.append(list(keys))
            raise ConnectionError("store unreachable (simulated)")
        return original(keys)

    monkeypatch.setattr(rt.storage, "delete_many", fail_once)
    Book.objects.filter(title="One").update(title="Uno")
    assert failures, "the write did not try to invalidate"
    return old


@pytest.mark.parametrize("where", ["locmem", "redis"])
def test_lost_invalidation_while_data_kept(data, counts, monkeypatch, request, where):
    """The store keeps the old entry and stamps, but one invalidation fails:
    the entry must not be served after the store is usable again."""
    rt = request.getfixturevalue("on_locmem" if where == "locmem" else "on_redis")
    old = _lose_one_invalidation(rt, monkeypatch, counts)
    assert counts("").get("errors", 0) == 1
    # until the debt is paid: the database answers
    assert cached() == truth() != old
    wait_out_outage(rt)
    # The debt was paid (everything invalidated) before the store was used
    # again: what is served now, hit or miss, was filled after the write.
    assert cached() == truth() != old, "an entry the lost invalidation should have killed"
    assert cached() == truth() != old
    # and the cache works again afterwards
    prime(counts)


def wait_for_payment(breaker, seconds=10.0):
    """Poll (no query, no store use from this thread) until the debt is paid."""
    deadline = time.monotonic() + seconds
    while breaker.owes_global and time.monotonic() < deadline:
        time.sleep(0.01)
    return not breaker.owes_global


@pytest.mark.parametrize("where", ["locmem", "redis"])
def test_idle_process_pays_its_outage_debt_in_the_background(
        data, counts, monkeypatch, request, where):
    """The writer whose invalidation was lost makes no further call: its
    background thread still deletes the global stamp, so another process
    (a fresh breaker: it saw no outage) is not served the old rows."""
    rt = request.getfixturevalue("on_locmem" if where == "locmem" else "on_redis")
    old = _lose_one_invalidation(rt, monkeypatch, counts)
    assert rt.breaker.owes_global
    assert wait_for_payment(rt.breaker), "the idle process never paid its debt"
    forget_outage()  # another process
    assert cached() == truth() != old


def test_positive_control_without_the_background_payer_an_idle_debtor_leaves_stale_rows(
        data, counts, monkeypatch, on_locmem):
    """The test above can fail: with no background payment, the idle
    writer's lost invalidation lets another process serve the old rows."""
    from querystash._breaker import Breaker

    monkeypatch.setattr(Breaker, "_pay_in_background", lambda self: None)
    old = _lose_one_invalidation(on_locmem, monkeypatch, counts)
    assert not wait_for_payment(on_locmem.breaker, seconds=0.5)
    forget_outage()  # another process
    assert cached() == old != truth()


def test_a_payment_does_not_clear_a_debt_incurred_while_it_ran(data, on_locmem, monkeypatch):
    """Two threads: one pays the debt while another's invalidation fails.
    The later failure is not covered by the payment and must stay owed."""
    from types import SimpleNamespace

    from querystash import _breaker

    rt = on_locmem
    # A breaker of its own, without a background payer: this thread pays.
    breaker = _breaker.Breaker(SimpleNamespace(storage=rt.storage, stamp_prefix=rt.stamp_prefix))
    monkeypatch.setattr(breaker, "_start_payer", lambda: None)
    breaker.trip(rt, ConnectionError("first outage"))
    original = _breaker._delete_global

    def paying_while_another_thread_fails(store):
        original(store)
        breaker.trip(rt, ConnectionError("meanwhile"))

    monkeypatch.setattr(_breaker, "_delete_global", paying_while_another_thread_fails)
    assert breaker.pay() is False  # the store is not used with a debt still owed
    assert breaker.owes_global and not breaker.usable
    monkeypatch.setattr(_breaker, "_delete_global", original)
    assert breaker.pay() is True
    assert not breaker.owes_global and breaker.usable


@pytest.mark.parametrize("where", ["locmem", "redis"])
def test_lost_invalidation_inside_transaction(data, counts, monkeypatch, request, where):
    from django.db import transaction

    rt = request.getfixturevalue("on_locmem" if where == "locmem" else "on_redis")
    old = prime(counts)
    original = rt.storage.delete_many
    fail = [True]

    def failing(keys):
        if fail[0]:
            raise ConnectionError("store unreachable (simulated)")
        return original(keys)

    monkeypatch.setattr(rt.storage, "delete_many", failing)
    with transaction.atomic():
        Book.objects.filter(title="One").update(title="Uno")
    fail[0] = False
    wait_out_outage(rt)
    assert cached() == truth() != old


@contextmanager
def short_timeouts(backend, location, **options):
    """A cache alias on the same server with short socket timeouts (a frozen
    server makes each call wait for them); yields the live runtime."""
    cache = {"BACKEND": backend, "LOCATION": location, "OPTIONS": options}
    with override_settings(CACHES={**settings.CACHES, "short": cache}):
        with store("short") as rt:
            yield rt


FROZEN = {
    "redis": ("redis_server", "redis_cache_alias", "django.core.cache.backends.redis.RedisCache",
              {"socket_timeout": 0.3, "socket_connect_timeout": 0.3}),
    "memcached": ("memcached_server", "memcached_cache_alias",
                  "django.core.cache.backends.memcached.PyMemcacheCache",
                  {"timeout": 0.3, "connect_timeout": 0.3}),
}


def request_writes_and_reads(data, n):
    """One request: a write, then varied reads; the rows it got and the truth."""
    Book.objects.filter(title="One").update(status=n)
    return varied_reads(), varied_truth()


def wait_until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.mark.parametrize("kind", ["redis", "memcached"])
def test_no_request_calls_a_frozen_store(data, counts, caplog, monkeypatch, request, kind):
    """A frozen server (SIGSTOP: connections hang until the socket timeout).
    The request that meets it pays one timeout; every later request makes
    zero store calls while the store is out — the background thread alone
    probes it — and after SIGCONT the store is used again once the debt is
    paid, with nothing stale served (issue 17)."""
    server_fixture, alias_fixture, backend, options = FROZEN[kind]
    server = request.getfixturevalue(server_fixture)
    alias = request.getfixturevalue(alias_fixture)
    location = settings.CACHES[alias]["LOCATION"]
    with short_timeouts(backend, location, **options) as rt:
        caplog.set_level(logging.WARNING, logger="querystash")
        old = prime(counts)
        calls = CallCounter(monkeypatch, rt.storage)
        server.pause()
        try:
            (got, want), first = calls.around(lambda: request_writes_and_reads(data, 1))
            assert got == want
            assert first >= 1, "the first request did not meet the outage"
            assert not rt.breaker.usable
            per_request = []
            for n in range(2, 8):
                (got, want), made = calls.around(lambda n=n: request_writes_and_reads(data, n))
                assert got == want
                per_request.append(made)
            # Requests waited on the frozen store zero times; the background
            # thread kept trying (how often is its business, not the requests').
            assert per_request == [0] * 6, per_request
            assert wait_until(lambda: calls.elsewhere >= 1), "nobody probed the store"
            assert not rt.breaker.usable, "paid while the server was frozen"
        finally:
            server.resume()
        assert len(querystash_errors(caplog)) == 1
        wait_out_outage(rt)
        assert cached() == truth() != old
        _, made = calls.around(cached)
        assert made >= 1, "the store is not used again after the payment"
        prime(counts)


def test_positive_control_a_request_that_pays_the_debt_calls_the_frozen_store(
        data, counts, monkeypatch, redis_server, redis_cache_alias):
    """The check above can fail: a read path that pays the debt itself (as
    the old ``Breaker.settle`` did) makes store calls from requests during
    the outage."""
    from querystash import _breaker, _stamps

    location = settings.CACHES[redis_cache_alias]["LOCATION"]
    with short_timeouts(FROZEN["redis"][2], location, **FROZEN["redis"][3]) as rt:
        prime(counts)
        calls = CallCounter(monkeypatch, rt.storage)
        original = _stamps.read

        def paying_read(rt_, *args):
            if rt_.breaker.owes_global:
                try:  # the planted bug: a request tries to pay
                    _breaker._delete_global(rt_.store)
                except Exception:  # noqa: BLE001 - still out
                    pass
            return original(rt_, *args)

        monkeypatch.setattr(_stamps, "read", paying_read)
        redis_server.pause()
        try:
            calls.around(lambda: request_writes_and_reads(data, 1))
            (got, want), made = calls.around(lambda: request_writes_and_reads(data, 2))
        finally:
            redis_server.resume()
        assert got == want
        assert made > 0


def test_circuit_breaker_bounds_store_attempts(data, on_redis, redis_server, counts, monkeypatch):
    prime(counts)
    calls = CallCounter(monkeypatch, on_redis.storage)
    redis_server.stop()
    _, first = calls.around(varied_reads)
    assert first == 1  # the failing call; the other reads of that request bypass
    for _ in range(4):
        assert calls.around(varied_reads)[1] == 0  # 40 reads: no store call
    assert calls.around(lambda: Book.objects.create(title="Three", author=data["alice"]))[1] == 0
    assert counts("testapp.Book").get("bypasses", 0) >= 40
    assert on_redis.breaker.owes_global


def test_a_long_outage_logs_once(data, on_redis, redis_server, counts, caplog):
    """'Log once per outage': a long outage must not log an error (and a
    false 'reachable again') at every attempt of the background payer."""
    prime(counts)
    caplog.set_level(logging.WARNING, logger="querystash")
    redis_server.stop()
    for _ in range(5):
        assert cached() == truth()
        time.sleep(0.07)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "querystash"]
    assert len(querystash_errors(caplog)) == 1, messages
    assert not any("reachable again" in m for _, m in messages), messages


EXIT_MESSAGE = "could not invalidate everything at exit"


@pytest.mark.parametrize("lost", [False, True], ids=["reads-only", "write-lost"])
def test_exit_message_only_when_an_invalidation_was_lost(
        data, on_redis, redis_server, counts, caplog, lost):
    """At exit the debt is tried once more. A process that only read while
    the store was out lost no invalidation: no message (issue 19); one whose
    write could not reach the store says so."""
    prime(counts)
    redis_server.stop()
    assert cached() == truth()  # the outage, met by a read
    if lost:
        Book.objects.filter(title="One").update(title="Uno")
    assert on_redis.breaker.owes_global and on_redis.breaker.lost == lost
    caplog.set_level(logging.WARNING, logger="querystash")
    _stores.pay_at_exit()  # what atexit runs; the store is still down
    said = [r.getMessage() for r in caplog.records if EXIT_MESSAGE in r.getMessage()]
    assert len(said) == int(lost), said


def test_no_exit_message_once_the_lost_invalidation_is_paid(
        data, on_redis, redis_server, counts, caplog):
    prime(counts)
    redis_server.stop()
    Book.objects.filter(title="One").update(title="Uno")
    assert on_redis.breaker.lost
    redis_server.start()
    wait_out_outage(on_redis)
    assert not on_redis.breaker.lost
    caplog.set_level(logging.WARNING, logger="querystash")
    _stores.pay_at_exit()
    assert not [r for r in caplog.records if EXIT_MESSAGE in r.getMessage()]


def test_store_errors_are_counted(data, on_redis, redis_server, counts):
    prime(counts)
    redis_server.kill()
    assert cached() == truth()
    assert counts("")["errors"] >= 1


# -- memcached -------------------------------------------------------------------------------


def test_memcached_killed_mid_test(data, on_memcached, memcached_server, counts, caplog):
    old = prime(counts)
    caplog.set_level(logging.WARNING, logger="querystash")
    memcached_server.kill()
    for _ in range(3):
        assert varied_reads() == varied_truth()
    assert counts("").get("errors", 0) >= 1
    Book.objects.filter(title="One").update(title="Uno")
    assert cached() == truth() != old
    assert len(querystash_errors(caplog)) <= 1
    memcached_server.start()
    wait_out_outage(on_memcached)
    assert cached() == truth() != old
    assert varied_reads() == varied_truth()


def test_memcached_lost_invalidation_while_data_kept(data, on_memcached, counts, monkeypatch):
    old = prime(counts)
    original = on_memcached.storage.delete_many
    failures = []

    def fail_once(keys):
        if not failures:
            failures.append(keys)
            raise ConnectionError("simulated")
        return original(keys)

    monkeypatch.setattr(on_memcached.storage, "delete_many", fail_once)
    Book.objects.filter(title="One").update(title="Uno")
    wait_out_outage(on_memcached)
    assert cached() == truth() != old


# -- bad entries ------------------------------------------------------------------------------

UNPICKLED = {"flag": False}


def _set_flag(*args):
    UNPICKLED["flag"] = True
    return ["pwned"]


class Hostile:
    """Unpickling this calls ``_set_flag`` (stands for ``os.system``)."""

    def __reduce__(self):
        return (_set_flag, ("touch /tmp/querystash-pwned",))


HOSTILE = pickle.dumps(Hostile(), protocol=pickle.HIGHEST_PROTOCOL)


@pytest.fixture
def flag():
    UNPICKLED["flag"] = False
    yield UNPICKLED
    UNPICKLED["flag"] = False


def _primed_entry_key(monkeypatch, rt, counts):
    keys = entry_keys(monkeypatch, rt)
    prime(counts)
    assert len(keys) == 1
    return keys[0]


def _assert_miss_and_correct(counts):
    h, m = hits(counts), counts("testapp.Book").get("misses", 0)
    assert cached() == truth()
    assert hits(counts) == h
    assert counts("testapp.Book").get("misses", 0) == m + 1


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(HOSTILE, id="bare-pickle"),
        pytest.param(_codec.MAGIC + b"\0" * 16 + HOSTILE, id="magic-bad-mac"),
        pytest.param(_codec.MAGIC + HOSTILE, id="magic-no-mac"),
    ],
)
@pytest.mark.parametrize("where", ["locmem", "redis"])
def test_planted_hostile_pickle_is_never_unpickled(
    data, counts, monkeypatch, flag, request, where, payload
):
    rt = request.getfixturevalue("on_locmem" if where == "locmem" else "on_redis")
    key = _primed_entry_key(monkeypatch, rt, counts)
    rt.storage.set(key, payload, 600)
    _assert_miss_and_correct(counts)
    assert not flag["flag"], "a planted payload was unpickled"
    assert counts("testapp.Book").get("corrupt", 0) >= 1


def test_hostile_pickle_planted_raw_in_redis_is_never_unpickled(
    data, on_redis, counts, monkeypatch, flag
):
    """An attacker who can write to redis writes raw bytes, not through
    Django's serializer: whatever reads the entry key must not unpickle them."""
    key = _primed_entry_key(monkeypatch, on_redis, counts)
    backend = caches[on_redis.storage.alias]
    from querystash.default_storage import safe_key

    raw_key = backend.make_and_validate_key(safe_key(key))
    client = backend._cache.get_client(raw_key, write=True)
    assert client.exists(raw_key)
    client.set(raw_key, HOSTILE)
    try:
        cached()
    except Exception:  # noqa: BLE001 - the flag is the point
        pass
    assert not flag["flag"], "a payload planted in redis was unpickled"


def test_valid_entry_copied_under_another_key_is_refused(data, on_locmem, counts, monkeypatch):
    keys = entry_keys(monkeypatch, on_locmem)
    prime(counts)
    other = list(Book.objects.filter(status=1).order_by("pk").values_list("pk", "title", "status"))
    list(Book.objects.filter(status=1).order_by("pk").values_list("pk", "title", "status"))
    assert len(keys) == 2
    first_blob = on_locmem.storage.get_many([keys[0]])[0]
    on_locmem.storage.set(keys[1], first_blob, 600)
    h = hits(counts)
    got = list(Book.objects.filter(status=1).order_by("pk").values_list("pk", "title", "status"))
    assert got == other
    assert hits(counts) == h


@pytest.mark.parametrize("cut", [1, 5, 17, "half", "head"])
@pytest.mark.parametrize("where", ["filebased", "redis"])
def test_truncated_entry_is_a_miss(data, counts, monkeypatch, request, where, cut):
    rt = request.getfixturevalue(f"on_{where}")
    key = _primed_entry_key(monkeypatch, rt, counts)
    blob = rt.storage.get_many([key])[0]
    assert isinstance(blob, bytes) and blob.startswith(_codec.MAGIC)
    if cut == "half":
        bad = blob[: len(blob) // 2]
    elif cut == "head":
        bad = blob[: len(_codec.MAGIC) + 16]
    else:
        bad = blob[:-cut]
    rt.storage.set(key, bad, 600)
    _assert_miss_and_correct(counts)
    # refilled and served again
    h = hits(counts)
    cached()
    assert hits(counts) == h + 1


def test_flipped_byte_in_entry_is_a_miss(data, on_filebased, counts, monkeypatch):
    key = _primed_entry_key(monkeypatch, on_filebased, counts)
    blob = bytearray(on_filebased.storage.get_many([key])[0])
    blob[-3] ^= 0xFF
    on_filebased.storage.set(key, bytes(blob), 600)
    _assert_miss_and_correct(counts)


@pytest.mark.parametrize(
    "value",
    [
        "a plain string",
        12345,
        0,
        b"",
        None,
        ["a", "list"],
        {"a": 1},
        3.5,
        True,
        b"qs1",
        memoryview(b"qs1" + b"\0" * 40),
    ],
    ids=repr,
)
@pytest.mark.parametrize("where", ["locmem", "redis"])
def test_foreign_value_under_entry_key_is_a_miss(data, counts, monkeypatch, request, where, value):
    rt = request.getfixturevalue("on_locmem" if where == "locmem" else "on_redis")
    if isinstance(value, memoryview):
        value = bytes(value)
    if where == "redis" and not isinstance(value, bytes):
        # The redis store holds bytes only: plant what a foreign client writes.
        value = pickle.dumps(value)
    key = _primed_entry_key(monkeypatch, rt, counts)
    rt.storage.set(key, value, 600)
    if value is None:
        # Django caches can't tell a stored None from a missing key: a plain miss.
        assert cached() == truth()
        return
    _assert_miss_and_correct(counts)


def test_foreign_int_planted_raw_in_redis_is_a_miss(data, on_redis, counts, monkeypatch):
    key = _primed_entry_key(monkeypatch, on_redis, counts)
    from querystash.default_storage import safe_key

    backend = caches[on_redis.storage.alias]
    raw_key = backend.make_and_validate_key(safe_key(key))
    backend._cache.get_client(raw_key, write=True).set(raw_key, b"12345")
    _assert_miss_and_correct(counts)


@pytest.mark.parametrize("value", ["not a stamp", 7, b"\0" * 8])
def test_foreign_value_under_stamp_key(data, on_locmem, counts, value):
    old = prime(counts)
    on_locmem.storage.set(on_locmem.stamp_prefix + "testapp_book", value, 600)
    _assert_miss_and_correct(counts)
    Book.objects.filter(title="One").update(title="Uno")
    assert cached() == truth() != old


def test_missing_stamp_is_a_miss(data, on_locmem, counts):
    prime(counts)
    # Evicted stamp (not a write): the entry must not be served.
    on_locmem.storage.delete_many([on_locmem.stamp_prefix + "*"])
    _assert_miss_and_correct(counts)


# -- awkward values -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["locmem", "redis"])
def test_binaryfield_rows_do_not_crash(counts, request, where):
    request.getfixturevalue("on_locmem" if where == "locmem" else "on_redis")
    payloads = [b"", b"\x00\x01\x02\xff", bytes(range(256)) * 4]
    for p in payloads:
        Blob.objects.create(data=p)

    def read_instances():
        return [bytes(b.data) for b in Blob.objects.order_by("pk")]

    def read_values():
        return [bytes(d) for d in Blob.objects.order_by("pk").values_list("data", flat=True)]

    for _ in range(3):
        assert read_instances() == payloads
        assert read_values() == payloads
        assert bytes(Blob.objects.get(pk=Blob.objects.nocache().first().pk).data) == payloads[0]
    c = counts("testapp.Blob")
    # Either cached (bytes) or refused as unpicklable (memoryview); never an error.
    assert c.get("hits", 0) + c.get("unpicklable", 0) >= 3, c
    assert counts("").get("errors", 0) == 0
    Blob.objects.filter(data=payloads[1]).update(data=b"changed")
    assert [bytes(b.data) for b in Blob.objects.order_by("pk")][1] == b"changed"


def test_memcached_blip_seen_by_app_code_does_not_drop_invalidations(
    data, memcached_server, memcached_cache_alias, counts
):
    """The site's own code shares the per-thread Django cache client. When one
    of its calls fails, pymemcache's HashClient puts the server in a retry
    window (1s) during which commands return a default *without raising*;
    an invalidation sent then is silently dropped while memcached keeps the
    old entry and stamps."""
    short = {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": settings.CACHES[memcached_cache_alias]["LOCATION"],
        "OPTIONS": {"timeout": 0.3, "connect_timeout": 0.3},
    }
    with override_settings(CACHES={**settings.CACHES, "mc_short": short}):
        with store("mc_short"):
            old = prime(counts)
            memcached_server.pause()
            try:
                with pytest.raises(OSError):
                    caches["mc_short"].get("the-site's-own-key")
            finally:
                memcached_server.resume()
            Book.objects.filter(title="One").update(title="Uno")
            time.sleep(1.2)  # past pymemcache's retry window: the server is used again
            assert cached() == truth() != old, "stale read: the invalidation was dropped"


class _RecordingStorage:
    """Just enough of a store for a breaker to pay into: what is deleted."""

    def __init__(self):
        self.deleted: list[str] = []

    def delete_many(self, keys):
        self.deleted.extend(keys)


def _child_after_fork_with_locks_held() -> int:
    """Fork while the breaker's locks are held, as by its payer thread in the
    middle of a payment; the child's exit code: 0 if it could owe and pay."""
    import os
    import types
    import warnings

    from querystash import _breaker

    store = types.SimpleNamespace(stamp_prefix="s:", storage=_RecordingStorage())
    breaker = _breaker.Breaker(store)
    breaker.owes_global = True
    breaker._lock.acquire()
    breaker._paying.acquire()
    try:
        with warnings.catch_warnings():  # "multi-threaded, fork() may deadlock": the point
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: a write's owe(), then the payment
            code = 1
            try:
                if breaker._lock.acquire(timeout=2):
                    breaker._lock.release()
                    breaker._start_payer = lambda: None  # pay here, not in a thread
                    breaker.owe()
                    if breaker.pay() and store.storage.deleted:
                        code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    finally:
        breaker._lock.release()
        breaker._paying.release()


def test_a_forked_child_does_not_inherit_the_payers_locks():
    # gunicorn forks workers from a master that may be paying an outage debt.
    assert _child_after_fork_with_locks_held() == 0


def test_positive_control_without_the_fork_hook_the_child_is_stuck(monkeypatch):
    from querystash import _breaker

    class Forgetful(list):  # the hook finds no breaker to reset
        def add(self, breaker):
            pass

    monkeypatch.setattr(_breaker, "_breakers", Forgetful())
    assert _child_after_fork_with_locks_held() == 1
