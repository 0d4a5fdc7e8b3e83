"""One process of a site, for test_sitestats: it reads through the cache on
the parent's test database and store, prints its own counters (one JSON line
per process) and ends, its counters going to the store's site-wide ones.

``python -m tests.sitestats_worker DB STORE URL READS MODE [PLANT]``

- STORE: ``django-redis``, ``django-memcached`` (the built-in store on a
  Django cache), ``redis``, ``memcached`` (the plugins);
- MODE: ``exit`` (flushed once, at exit), ``thread`` (flushed by the
  background thread; the process then ends without running ``atexit``),
  ``fork`` (reads, forks; the child reads too and flushes from the thread it
  started after the fork, the parent flushes at exit);
- PLANT ``fork``: the child forgets that its counters hold the parent's
  (a positive control: the parent's counts are then sent twice);
  ``slow_register``: the registry claim after a flush takes 0.3 s (the
  process ends as soon as its counts are sent: their names must be listed).
"""

from __future__ import annotations

import json
import os
import sys
import time


def setup(db_name: str, store: str, url: str, flush_seconds: float) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = db_name
    config = {**settings.QUERYSTASH, "STATS_FLUSH_SECONDS": flush_seconds}
    if store.startswith("django-"):
        backend = {"django-redis": "django.core.cache.backends.redis.RedisCache",
                   "django-memcached": "django.core.cache.backends.memcached.PyMemcacheCache"}
        settings.CACHES = {**settings.CACHES, "site": {"BACKEND": backend[store], "LOCATION": url}}
        config["django"] = {"cache": "site"}
    elif store == "redis":
        config.update(STORAGE="redis", redis={"url": url, "socket_timeout": 2})
    elif store == "memcached":
        config.update(STORAGE="memcached", memcached={"servers": [url], "timeout": 2})
    else:
        raise ValueError(store)
    settings.QUERYSTASH = config
    import django

    django.setup()


def counts() -> dict:
    import querystash

    return {"model": querystash.stats(), "memo": querystash.memoize_stats()}


def minus(now: dict, before: dict) -> dict:
    out: dict = {}
    for kind, labels in now.items():
        for label, fields in labels.items():
            for field, n in fields.items():
                left = n - before.get(kind, {}).get(label, {}).get(field, 0)
                if left:
                    out.setdefault(kind, {}).setdefault(label, {})[field] = left
    return out


def serve(reads: int) -> None:
    """Known reads: books (a hit after the first fill anywhere), authors by
    name, a memoized function whose label needs a digest as a key."""
    import querystash
    from tests.testapp.models import Author, Book

    @querystash.memoize(name="sitestats:titles")
    def titles():
        return sorted(Book.objects.values_list("title", flat=True))

    for i in range(reads):
        list(Book.objects.values_list("title", flat=True))
        Author.objects.filter(name=f"author {i % 3}").exists()
        titles()


def main(db_name: str, store: str, url: str, reads: str, mode: str, plant: str = "") -> None:
    setup(db_name, store, url, 0.05 if mode == "thread" else 3600.0)
    from querystash import _sitestats

    reads_n = int(reads)
    serve(reads_n)
    if mode == "exit":
        print(json.dumps(counts()), flush=True)
        return  # atexit: the last flush
    if mode == "thread":
        if plant == "slow_register":
            flusher_class = type(_sitestats.flusher)
            register = flusher_class._register

            def slow(self, *args):
                time.sleep(0.3)
                return register(self, *args)

            flusher_class._register = slow
        print(json.dumps(counts()), flush=True)
        deadline = time.monotonic() + 60
        while (_sitestats.flusher.pending or not _sitestats.flusher.sent
               or _sitestats.flusher.baseline != _sitestats._snapshot(_runtime())):
            if time.monotonic() > deadline:
                print("the background thread never flushed", file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.01)
        os._exit(0)  # no atexit: only the thread flushed
    if mode == "fork":
        if plant == "fork":
            os.register_at_fork(after_in_child=_sitestats.flusher.forget)
        at_fork = counts()
        print(json.dumps(at_fork), flush=True)
        pid = os.fork()
        if pid == 0:
            serve(reads_n)
            print(json.dumps(minus(counts(), at_fork)), flush=True)
            ok = _sitestats.flush_now(30) and not _sitestats.flusher.pending
            os._exit(0 if ok else 4)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"the forked child failed: {status}")
        return  # atexit: the parent's flush
    raise ValueError(mode)


def _runtime():
    from querystash import _runtime

    return _runtime.current


if __name__ == "__main__":
    main(*sys.argv[1:])
