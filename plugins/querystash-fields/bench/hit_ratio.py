"""Hit ratio under a write load: table level vs field-scoped, same workload.

Not part of the suite (its name keeps pytest from collecting it). From the
repository root:

    python -m pytest plugins/querystash-fields/bench/hit_ratio.py -q -s -p no:cacheprovider

``WRITE_RATE`` (default 0.1) sets the share of operations that are a save().
"""
from __future__ import annotations

import os
import random

import pytest
from django.conf import settings
from django.test import override_settings

from querystash import _runtime
from tests.testapp.models import Author, Book

pytestmark = pytest.mark.django_db(transaction=True)

AUTHORS, BOOKS, OPS, WRITE_RATE = 20, 400, 5000, float(os.environ.get("WRITE_RATE", "0.1"))


def workload(seed=1):
    rng = random.Random(seed)
    authors = [Author.objects.create(name=f"a{i}") for i in range(AUTHORS)]
    books = [Book.objects.create(title=f"b{i}", author=rng.choice(authors),
                                 status=rng.randint(1, 3)) for i in range(BOOKS)]
    ids = [b.pk for b in books]
    reads = 0
    _runtime.current.stats.reset()
    for _ in range(OPS):
        if rng.random() < WRITE_RATE:
            b = Book.objects.nocache().get(pk=rng.choice(ids))
            b.status = rng.randint(1, 3)
            b.save()
        else:
            a = rng.choice(authors)
            kind = rng.random()
            if kind < 0.5:
                list(Book.objects.cache().filter(author=a, status=2).values_list("pk"))
            elif kind < 0.8:
                Book.objects.cache().get(pk=rng.choice(ids))
            else:
                Book.objects.cache().filter(author=a).count()
            reads += 1
    t = _runtime.current.stats.totals()
    return t.get("hits", 0) / reads


@pytest.mark.parametrize("mode", ["table-level", "field-scoped"])
def test_hit_ratio(mode):
    q = dict(settings.QUERYSTASH)
    if mode == "table-level":
        q["DISABLED_PLUGINS"] = ["fields"]
    with override_settings(QUERYSTASH=q):
        ratio = workload()
    print(f"\n{mode}: write rate {WRITE_RATE:.0%}, {OPS} ops -> hit ratio {ratio:.1%}")
