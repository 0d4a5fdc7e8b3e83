"""The write cost of ``save()``: caching off vs the core alone vs the core
with querystash-fields (and querystash-m2m), in one process, interleaved.

    .venv/bin/python -m bench.save_cost [--db sqlite|postgres] [--rounds 15] [--saves 200]
                                        [--key int|uuid|char]

Each round times ``--saves`` saves of existing rows (``Book``: one loaded row,
its status changed) in every mode, the modes in a rotating order; the report
is each mode's median time per save over the rounds, and the database round
trips one save makes (after the connection's first save, which compiles
querystash-fields' old-values read), with the statements each one sends.
The modes switch through ``QUERYSTASH`` (the runtime is rebuilt), so all
run on the same code, database and data.
To compare two checkouts, run it twice with ``PYTHONPATH`` pointing at each
one's ``core`` and ``plugins/*`` (the script only uses the public settings).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODES = {
    # caching off and the plugins disabled: the core's write path only (it
    # still invalidates: other processes may share the store)
    "off": {"ENABLED": False, "DISABLED_PLUGINS": ["fields", "m2m"]},
    "core": {"DISABLED_PLUGINS": ["fields", "m2m"]},
    "core+fields": {"DISABLED_PLUGINS": []},
}


def _settings(db: str, tmp: str) -> dict:
    if db == "sqlite":
        database = {"ENGINE": "django.db.backends.sqlite3",
                    "NAME": os.path.join(tmp, "save_cost.sqlite3")}
    else:
        database = {"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1",
                    "PORT": 5432, "USER": "postgres",
                    "NAME": os.environ.get("QUERYSTASH_BENCH_PG_NAME", "querystash_save_cost")}
    return {
        "SECRET_KEY": "bench", "USE_TZ": True,
        "INSTALLED_APPS": ["django.contrib.contenttypes", "django.contrib.auth", "querystash",
                           "tests.testapp"],
        "DATABASES": {"default": database},
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "CACHES": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                               "OPTIONS": {"MAX_ENTRIES": 100_000}}},
        "QUERYSTASH": {"STORAGE": "django",
                       "MODELS": {"testapp.*": {"ops": "all", "timeout": 600}}},
    }


def _create_pg_database(name: str, drop: bool = False) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if not drop:
            conn.execute(f'CREATE DATABASE "{name}"')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument("--label", default="")
    parser.add_argument("--key", choices=["int", "uuid", "char"], default="int",
                        help="the saved rows' primary key: Book's integer, Ticket's UUID or "
                             "Badge's CharField")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    # SQLite in memory-backed /dev/shm where there is one: fsync would drown the rest
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    tmp = tempfile.mkdtemp(prefix="qs-save-cost-", dir=shm)
    conf = _settings(args.db, tmp)
    if args.db == "postgres":
        _create_pg_database(conf["DATABASES"]["default"]["NAME"])
    import django
    from django.conf import settings

    settings.configure(**conf)
    django.setup()
    try:
        return _run(args, conf)
    finally:
        from django.db import connections

        connections.close_all()
        if args.db == "postgres":
            _create_pg_database(conf["DATABASES"]["default"]["NAME"], drop=True)


def _run(args, conf) -> int:
    from django.core.management import call_command
    from django.db import connection
    from django.test import override_settings
    from django.test.utils import CaptureQueriesContext

    from querystash import _runtime
    from tests.testapp.models import Author, Badge, Book, Ticket

    call_command("migrate", run_syncdb=True, verbosity=0)
    author = Author.objects.create(name="a")
    # --key uuid: Ticket, keyed by a UUIDField; --key char: Badge, keyed by
    # a CharField (their old-values reads by that key)
    saved, row = {
        "int": (Book, lambda i: {"title": f"b{i}"}),
        "uuid": (Ticket, lambda i: {}),
        "char": (Badge, lambda i: {"code": f"badge-{i}"}),
    }[args.key]
    saved.objects.bulk_create(saved(author=author, status=i % 3, **row(i))
                              for i in range(args.saves))
    pks = list(saved.objects.nocache().values_list("pk", flat=True))

    def one_round() -> float:
        books = list(saved.objects.nocache().filter(pk__in=pks))  # loaded, not timed
        start = time.perf_counter()
        for i, book in enumerate(books):
            book.status = (book.status + 1 + i) % 3
            book.save()
        return (time.perf_counter() - start) / len(books)

    def hits() -> float:
        """A field-scoped read, served from the cache: the hit path's cost."""
        def read():
            return list(Book.objects.filter(author=author, status=2).values_list("pk"))

        read()
        start = time.perf_counter()
        for _ in range(args.saves):
            read()
        return (time.perf_counter() - start) / args.saves

    hit_timings: dict[str, list[float]] = {m: [] for m in MODES}
    timings: dict[str, list[float]] = {m: [] for m in MODES}
    sent: dict[str, list[str]] = {}
    names = list(MODES)
    for r in range(args.rounds + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        for mode in order:
            config = {**conf["QUERYSTASH"], **MODES[mode]}
            with override_settings(QUERYSTASH=config):
                rt = _runtime.current
                assert rt is not None
                if r == 0:  # warm-up round: counts round trips, not timed
                    book = saved.objects.nocache().get(pk=pks[0])
                    for _ in range(2):  # the first save compiles the old-values read
                        book.status = (book.status + 1) % 3
                        with CaptureQueriesContext(connection) as ctx:
                            book.save()
                    sent[mode] = [q["sql"] for q in ctx.captured_queries]
                    one_round()
                else:
                    timings[mode].append(one_round())
                    hit_timings[mode].append(hits())
    label = f" [{args.label}]" if args.label else ""
    print(f"save() cost{label}: {args.db}, {args.rounds} rounds x {args.saves} saves "
          f"of {saved.__name__} ({args.key} key), median per save")
    base = statistics.median(timings["off"])
    for mode in names:
        med = statistics.median(timings[mode])
        # one execute, one round trip (querystash-fields on PostgreSQL may
        # send its read and Django's UPDATE as one: "SELECT ...; UPDATE ...")
        kinds = ", ".join("; ".join(part.split()[0] for part in sql.split("; "))
                          for sql in sent[mode])
        print(f"  {mode:12s} {med * 1e6:8.1f} us  x{med / base:4.2f} of off  "
              f"{len(sent[mode])} round trip(s) per save: {kinds}")
    print("hit of Book.filter(author=a, status=2), median per read:")
    for mode in names[1:]:
        print(f"  {mode:12s} {statistics.median(hit_timings[mode]) * 1e6:8.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
