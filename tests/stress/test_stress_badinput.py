"""Bad input in the store and in queries: planted garbage, truncated and
foreign entries, hostile payloads, garbage stamps; unicode and huge
parameters. Every read returns the database's rows, no exception, nothing
unpickled."""

from __future__ import annotations

import os
import pickle

import pytest
from django.conf import settings
from django.test import override_settings

from querystash import _codec, _localstore, _runtime
from tests.stress import harness
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

MARKER = os.path.join(settings.TMP_DIR, "pwned")


class Hostile:
    def __reduce__(self):
        return (open, (MARKER, "w"))


@pytest.fixture(params=["locmem", "redis", "memcached"])
def store(request):
    """The core's locmem store, or the throwaway redis / memcached."""
    if request.param == "locmem":
        config = {"STORAGE": "django", "django": {"cache": "default"}}
    else:
        server = request.getfixturevalue(f"{request.param}_server")
        server.ensure_running()
        config, _caches, target = harness.store_config(request.param, server)
        harness.flush_store(target)
    with override_settings(QUERYSTASH={**settings.QUERYSTASH, **config}):
        rt = _runtime.current
        keys = []
        key_function = rt.key_function
        rt.key_function = lambda info: keys.append(key_function(info)) or keys[-1]
        yield rt, keys


@pytest.fixture
def books():
    author = Author.objects.create(name="ann")
    return [Book.objects.create(title=f"b{i}", author=author, price=i) for i in range(5)]


def read(status=None):
    qs = Book.objects.order_by("pk")
    if status is not None:
        qs = qs.filter(status=status)
    return list(qs.values_list("pk", "title", "price"))


def fresh(status=None):
    rt = _runtime.current
    rt.enabled = False
    try:
        return read(status)
    finally:
        rt.enabled = True


def planted(rt, keys, value) -> None:
    """Fill the entry of read(), then replace its value in the store."""
    read()
    rt.storage.set(keys[-1], value, 60)


def assert_served_from_db(rt):
    corrupt = rt.stats.totals()["corrupt"]
    assert read() == fresh()
    assert rt.stats.totals()["corrupt"] == corrupt + 1
    assert read() == fresh()  # refilled, and a hit again
    assert not os.path.exists(MARKER)


@pytest.mark.parametrize("value", [b"garbage", b"", b"\x00" * 5000, b"x" * 70000],
                         ids=["garbage", "empty", "zeros", "long"])
def test_stress_bad_planted_entry(store, books, value):
    rt, keys = store
    planted(rt, keys, value)
    assert_served_from_db(rt)


def as_bytes(rt, key, blob) -> bytes:
    """The entry as a shared store holds it (signed bytes). The in-process
    store keeps objects: bytes planted there are foreign values all the same."""
    if isinstance(blob, bytes):
        return blob
    return _codec.encode(rt.secret, key, _localstore.thaw(key, blob))


def test_stress_bad_truncated_entry(store, books):
    rt, keys = store
    read()
    blob = as_bytes(rt, keys[-1], rt.storage.get_many([keys[-1]])[0])
    for cut in (1, len(blob) // 2, len(blob) - 1):
        rt.storage.set(keys[-1], blob[:cut], 60)
        assert_served_from_db(rt)


def test_stress_bad_foreign_entry(store, books):
    """A valid entry of another query, copied under this key: a miss."""
    rt, keys = store
    read(status=1)
    Book.objects.filter(pk=books[0].pk).update(status=2)
    read(status=1)
    other = rt.storage.get_many([keys[-1]])[0]
    planted(rt, keys, other)
    assert_served_from_db(rt)


def test_stress_bad_hostile_payloads(store, books):
    rt, keys = store
    read()
    blob = as_bytes(rt, keys[-1], rt.storage.get_many([keys[-1]])[0])
    evil = pickle.dumps(Hostile())
    for value in (evil, blob[: len(blob) - len(evil)] + evil, blob[:32] + evil,
                  pickle.dumps(([None], [(1, "x", 0)]))):
        rt.storage.set(keys[-1], value, 60)
        assert_served_from_db(rt)


def test_stress_bad_garbage_stamps(store, books):
    rt, keys = store
    read()
    stamp_keys = [k for k in _stamp_keys(rt)]
    for value in (b"", b"garbage", os.urandom(8), b"\xff" * 100):
        for key in stamp_keys:
            rt.storage.set(key, value, 60)
        misses = rt.stats.totals()["misses"]
        assert read() == fresh()
        assert rt.stats.totals()["misses"] == misses + 1
    Book.objects.filter(pk=books[0].pk).update(title="changed")
    assert read() == fresh()


def _stamp_keys(rt):
    return [rt.stamp_prefix + tag for tag in ("testapp_book", "*")]


@pytest.mark.parametrize("name", ["名前🙂", "ü" * 300, "a b\r\nc", "\x01\x02\x7f", "%s %(x)s {}"],
                         ids=["cjk-emoji", "long", "whitespace", "control", "format"])
def test_stress_bad_unicode_params(store, name):
    rt, _keys = store
    Author.objects.create(name=name[:100])
    for _ in range(2):
        assert (list(Author.objects.filter(name=name[:100]).values_list("name", flat=True))
                == [name[:100]])
        assert Author.objects.filter(name__startswith=name[:3]).count() == 1


def test_stress_bad_huge_params(store, books):
    rt, keys = store
    names = [f"ü{i}-" + "x" * 200 for i in range(3000)]
    Author.objects.create(name=names[-1][:100])
    huge = Author.objects.filter(name__in=[n[:100] for n in names])
    for _ in range(2):
        assert huge.count() == 1
        assert list(huge.values_list("name", flat=True)) == [names[-1][:100]]
    assert all(len(k) < 250 for k in keys)  # memcached's limit, whatever the parameters
    big = "y" * 1_000_000  # a result too large for memcached's 1 MB items
    Book.objects.filter(pk=books[0].pk).update(title=big[:200])
    rows = [list(Book.objects.filter(title__lt=big).values_list("pk", flat=True))
            for _ in range(2)]
    assert rows[0] == rows[1] == list(Book.objects.nocache().filter(title__lt=big)
                                      .values_list("pk", flat=True))
