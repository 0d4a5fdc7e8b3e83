"""A "list with tags" site under many-to-many writes: hits and database
queries per request, with and without the plugin.

Not part of the suite (its name keeps pytest from collecting it). From the
repository root:

    python -m pytest plugins/querystash-m2m/bench/list_with_tags.py -q -s -p no:cacheprovider

``WRITE_RATE`` (default 0.1) sets the share of operations that are an m2m
write (add / remove / set / clear, from a book or from a tag).
"""
from __future__ import annotations

import os
import random

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from querystash import _runtime
from tests.testapp.models import Author, Book, Tag

pytestmark = pytest.mark.django_db(transaction=True)

BOOKS, TAGS, PER_BOOK, PAGE, OPS = 200, 30, 3, 20, 3000
WRITE_RATE = float(os.environ.get("WRITE_RATE", "0.1"))

MODES = {
    # name: (disabled plugins, querystash-fields in_limit)
    "core only (table level)": (["fields", "m2m"], 8),
    "m2m, no fields (table level)": (["fields"], 8),
    "fields, no m2m": (["m2m"], 20),
    "fields + m2m, in_limit 8": ([], 8),
    "fields + m2m, in_limit 20": ([], 20),
}


def list_page(page):
    books = list(Book.objects.order_by("pk").prefetch_related("tags")[page * PAGE:][:PAGE])
    return [(b.title, [t.name for t in b.tags.all()]) for b in books], Book.objects.count()


def tag_page(tag):
    return list(tag.books.order_by("pk")[:PAGE].values_list("title", flat=True)), tag.books.count()


def book_page(book):
    return [t.name for t in book.tags.all()], book.tags.count()


def write(rng, books, tags):
    kind = rng.random()
    if kind < 0.4:
        rng.choice(books).tags.add(rng.choice(tags))
    elif kind < 0.6:
        rng.choice(tags).books.add(rng.choice(books))
    elif kind < 0.8:
        book = rng.choice(books)
        book.tags.remove(*rng.sample(tags, 2))
    elif kind < 0.95:
        rng.choice(books).tags.set(rng.sample(tags, PER_BOOK))
    else:
        rng.choice(books).tags.clear()


def workload(seed=1):
    rng = random.Random(seed)
    ann = Author.objects.create(name="Ann")
    tags = [Tag.objects.create(name=f"t{i}") for i in range(TAGS)]
    books = [Book.objects.create(title=f"b{i}", author=ann) for i in range(BOOKS)]
    for book in books:
        book.tags.add(*rng.sample(tags, PER_BOOK))
    _runtime.current.stats.reset()
    requests = 0
    executed = [0]

    def count(execute, sql, params, many, context):
        executed[0] += 1
        return execute(sql, params, many, context)

    db_queries = 0
    for _ in range(OPS):
        if rng.random() < WRITE_RATE:
            write(rng, books, tags)
            continue
        start = executed[0]
        with connection.execute_wrapper(count):
            kind = rng.random()
            if kind < 0.6:
                list_page(rng.randrange(BOOKS // PAGE))
            elif kind < 0.9:
                tag_page(rng.choice(tags))
            else:
                book_page(rng.choice(books))
        requests += 1
        db_queries += executed[0] - start
    totals = _runtime.current.stats.totals()
    hits, misses = totals.get("hits", 0), totals.get("misses", 0)
    return {
        "hits/request": hits / requests,
        "hit ratio": hits / max(1, hits + misses),
        "DB queries/request": db_queries / requests,
    }


def test_list_with_tags(redis_cache_alias):
    # A real redis server: locmem's default MAX_ENTRIES (300) would evict
    # stamps and turn the field tags of wide prefetches into misses.
    results = {}
    for mode, (disabled, in_limit) in MODES.items():
        config = {**settings.QUERYSTASH, "DISABLED_PLUGINS": disabled,
                  "django": {"cache": redis_cache_alias},
                  "fields": {"in_limit": in_limit, "max_tags": max(16, in_limit)}}
        with override_settings(QUERYSTASH=config):
            results[mode] = workload()
        Book.objects.all().delete()
        Tag.objects.all().delete()
        Author.objects.all().delete()
    print(f"\n{OPS} operations, {WRITE_RATE:.0%} m2m writes, {BOOKS} books, {TAGS} tags, "
          f"{connection.vendor}, store: redis (Django's RedisCache)")
    print("\n| mode | hits/request | hit ratio | DB queries/request |")
    print("| --- | --- | --- | --- |")
    for mode, r in results.items():
        print(f"| {mode} | {r['hits/request']:.2f} | {r['hit ratio']:.1%} "
              f"| {r['DB queries/request']:.2f} |")
