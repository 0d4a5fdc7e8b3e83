"""Child processes for test_concurrency: each sets up Django on the parent's
test database and the parent's redis, then reads or writes."""

from __future__ import annotations

import os
import random


def setup(db_name: str, redis_url: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = db_name
    settings.CACHES = {
        **settings.CACHES,
        "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url},
    }
    settings.QUERYSTASH = {**settings.QUERYSTASH, "django": {"cache": "redis"}}
    import django

    django.setup()


def read_stamps_after_query(rt, key, tags, model, timeout, can_fill, run):
    """The bug the stamp protocol exists to prevent: stamps read *after* the
    query, so a write landing in between is not seen. Positive control only."""
    from querystash import _codec, _stamps

    values = rt.storage.get_many([key])
    if values[0] is not None:
        payload = _codec.decode(rt.secret, key, values[0])
        stamps = rt.storage.get_many([rt.stamp_prefix + t for t in tags])
        if payload is not None and payload[0] == stamps:
            return payload[1]
    result = run()
    _stamps.checkpoint("before_fill")
    stamps = rt.storage.get_many([rt.stamp_prefix + t for t in tags])
    _stamps._ensure_stamps(rt, tags, [rt.stamp_prefix + t for t in tags], stamps)
    _stamps._fill(rt, key, model, tags, timeout, stamps, result)
    return result


def paused_reader(db_name, redis_url, book_id, buggy, paused, go, out) -> None:
    """Read a book's price through the cache, pausing between query and fill."""
    setup(db_name, redis_url)
    from querystash import _stamps
    from tests.testapp.models import Book

    def checkpoint(name):
        if name == "before_fill":
            paused.set()
            go.wait(30)

    _stamps.checkpoint = checkpoint
    if buggy:
        _stamps.read = read_stamps_after_query
    out.put(list(Book.objects.cache().filter(pk=book_id).values_list("price", flat=True)))


def mixed_worker(db_name, redis_url, book_ids, seed, iterations, out) -> None:
    """Random reads and writes of a few rows, with random pauses at the
    protocol's named points; reports (reads made, cache hits among them)."""
    setup(db_name, redis_url)
    import time

    from django.db import transaction

    from querystash import _stamps
    from tests.testapp.models import Book

    rng = random.Random(seed)

    def checkpoint(name):
        if rng.random() < 0.3:
            time.sleep(rng.random() * 0.01)

    _stamps.checkpoint = checkpoint
    reads = 0
    for _ in range(iterations):
        book_id = rng.choice(book_ids)
        action = rng.random()
        if action < 0.6:
            list(Book.objects.cache().filter(pk=book_id).values_list("price", "status"))
            Book.objects.cache().filter(status=rng.randint(1, 3)).count()
            reads += 2
        elif action < 0.8:
            Book.objects.filter(pk=book_id).update(price=rng.randint(1, 999))
        elif action < 0.9:
            with transaction.atomic():
                Book.objects.filter(pk=book_id).update(status=rng.randint(1, 3))
                list(Book.objects.cache().filter(pk=book_id).values_list("status"))
        else:
            try:
                with transaction.atomic():
                    Book.objects.filter(pk=book_id).update(price=0)
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
    from querystash import _runtime

    out.put((reads, _runtime.current.stats.totals()["hits"]))
