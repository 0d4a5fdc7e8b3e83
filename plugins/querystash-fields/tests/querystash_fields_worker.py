"""Child process for test_fields_processes: reads through the shared redis."""

from __future__ import annotations


def reader(db_name, redis_url, author_id, rounds, ready, go, out) -> None:
    """Each round: read (was it a hit? is it fresh?), read again (fills after
    a miss), then wait for the parent's next write."""
    from tests.race_worker import setup

    setup(db_name, redis_url)
    from querystash.testing import counters
    from tests.testapp.models import Book

    def read(cached=True):
        base = Book.objects.cache() if cached else Book.objects.nocache()
        return sorted(base.filter(author_id=author_id, status=2).values_list("pk", "title"))

    def hits():
        return counters().get("hits", 0)

    read()  # prime
    results = []
    for _ in range(rounds):
        before = hits()
        got = read()
        results.append((got, hits() - before, got == read(cached=False)))
        read()
        ready.set()
        go.wait(60)
        go.clear()
    out.put(results)
