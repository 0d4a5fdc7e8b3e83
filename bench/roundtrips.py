"""Store round trips per hit, per cold miss and per write, counted on the wire.

    .venv-bench/bin/python -m bench.roundtrips [--modes a,b] [--ops get,filter_20]

Every mode runs in a process of its own on a fresh SQLite copy of the bench
data, against a throwaway redis and memcached. A **round trip** is counted
each time the process waits for a store's answer: a ``recv`` on a socket that
has sent something since its last ``recv`` (Python's ``socket.socket``, which
redis-py and pymemcache use; the database's own traffic goes through SQLite or
libpq and is not counted). So a request sent without waiting for a reply (a
``noreply`` fill) costs nothing until something waits on that socket again,
as on the server. The in-process store has no round trips: its storage calls
are counted instead.

For each read operation: a **hit** (the cached query again), a **cold miss**
(a parameter never read before, the stamps in place as on a warm site), and a
**write+read** (``book.save()`` then the read of that author's books, whose
stamps the write deleted: the cold miss with its stamps missing). And the
**write** alone (``book.save()``), and inside the caller's ``atomic()``
(begun IMMEDIATE): a ``save()``, and a ``save()`` then a ``QuerySet.update()``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODES = ["querystash-locmem", "querystash-django-redis", "querystash-django-memcached",
                 "querystash-redis", "querystash-memcached", "querystash-fields",
                 "cacheops", "cachalot-redis", "cachalot-memcached"]
DEFAULT_OPS = ["get", "filter_20", "count", "aggregate"]


class WireCounter:
    """Counts waits for an answer on every Python socket of the process."""

    def __init__(self):
        self.trips = 0
        self._sent: set[int] = set()
        self._undo = []

    def install(self) -> None:
        counter = self
        cls = socket.socket
        for name in ("send", "sendall", "sendmsg"):
            original = getattr(cls, name)

            def sender(self, *args, _original=original, **kwargs):
                counter._sent.add(id(self))
                return _original(self, *args, **kwargs)

            setattr(cls, name, sender)
            self._undo.append((name, original))
        for name in ("recv", "recv_into", "recvfrom", "recvfrom_into", "recvmsg"):
            original = getattr(cls, name)

            def receiver(self, *args, _original=original, **kwargs):
                if id(self) in counter._sent:
                    counter._sent.discard(id(self))
                    counter.trips += 1
                return _original(self, *args, **kwargs)

            setattr(cls, name, receiver)
            self._undo.append((name, original))

    def flush(self) -> None:
        """Make pending sends count now (nothing waits on them yet)."""
        self._sent.clear()


class StorageCalls:
    """Counts the calls of the querystash storage (the in-process store)."""

    def __init__(self):
        self.calls = 0

    def install(self) -> None:
        from querystash import _runtime

        storage = _runtime.current.storage
        for name in ("get_many", "add_many", "set", "delete_many"):
            original = getattr(storage, name)

            def counted(*args, _original=original, **kwargs):
                self.calls += 1
                return _original(*args, **kwargs)

            setattr(storage, name, counted)


def measure(ops_wanted: list[str], repeats: int = 5) -> dict:
    from bench import ops
    from bench.worker import QueryCounter

    lib = os.environ["BENCH_MODE"].split("-")[0]
    wire = WireCounter()
    wire.install()
    calls = None
    if os.environ["BENCH_MODE"] == "querystash-locmem":
        calls = StorageCalls()
        calls.install()

    def count(fn) -> tuple[float, float, float]:
        """(round trips, storage calls, SQL statements) per call of ``fn``, averaged."""
        wire.flush()
        t0, c0 = wire.trips, calls.calls if calls else 0
        sql = 0
        for _ in range(repeats):
            with QueryCounter() as q:
                fn()
            sql += q.n
        # a reply-less request (a noreply fill) is paid by the next wait on
        # its socket, if any: the last call's is not counted, as it never waits
        return ((wire.trips - t0) / repeats,
                ((calls.calls - c0) / repeats) if calls else 0.0, sql / repeats)

    out: dict = {"mode": os.environ["BENCH_MODE"], "lib": lib, "ops": {}}
    fresh = iter(range(2, ops.COLD_AUTHORS))
    for name in ops_wanted:
        fn = ops.READ_OPS[name][0]
        fn(ops.HIT_K)
        fn(ops.HIT_K)
        hit = count(lambda fn=fn: fn(ops.HIT_K))
        cold = count(lambda fn=fn: fn(next(fresh)))
        out["ops"][name] = {"hit": hit, "cold miss": cold}
    writer = ops.Writer()
    out["ops"]["write"] = {"write": count(lambda: writer.save(writer.next_book()))}

    def write_read():
        book = writer.next_book()
        writer.save(book)
        ops.filter_20(book.author_id)

    for _ in range(2):
        write_read()
    out["ops"]["write_read_affected"] = {"write+read": count(write_read)}

    # Inside the caller's transaction (ATOMIC_REQUESTS, say), begun IMMEDIATE
    # as SQLite sites configure it (OPTIONS["transaction_mode"]): in a
    # deferred one querystash-fields cannot hold the row and leaves the save
    # to the table's family.
    from django.db import connection, transaction

    from bench.benchproject.benchapp.models import Book

    def in_atomic(update: bool):
        def run():
            book = writer.next_book()
            connection.ensure_connection()
            saved = getattr(connection, "transaction_mode", None)
            connection.transaction_mode = "IMMEDIATE"
            try:
                with transaction.atomic():
                    writer.save(book)
                    if update:
                        Book.objects.filter(pk=book.pk).update(pages=book.pages)
            finally:
                connection.transaction_mode = saved
        return run

    for _ in range(2):
        in_atomic(True)()
    out["ops"]["write_in_atomic"] = {"save() in atomic()": count(in_atomic(False)),
                                     "save() + update() in atomic()": count(in_atomic(True))}
    return out


def worker(args) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.benchproject.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from bench import ops

    call_command("migrate", verbosity=0)
    if not ops.seeded():
        ops.seed()
    print(json.dumps(measure(args.ops.split(","))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modes", default=",".join(DEFAULT_MODES))
    p.add_argument("--ops", default=",".join(DEFAULT_OPS))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    sys.path.insert(0, str(ROOT))
    from bench.modes import MODES
    from querystash.testing.servers import MemcachedServer, RedisServer

    redis = RedisServer().start()
    memcached = MemcachedServer(memory_mb=64).start()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for mode in args.modes.split(","):
                if mode not in MODES or not MODES[mode].available():
                    print(f"skipping {mode}: unknown or not installed", file=sys.stderr)
                    continue
                env = {**os.environ, "BENCH_MODE": mode, "BENCH_DB": "sqlite",
                       "BENCH_SQLITE_PATH": str(Path(tmp) / f"{mode}.sqlite3"),
                       "BENCH_REDIS_URL": redis.url, "BENCH_MEMCACHED": memcached.url}
                proc = subprocess.run([sys.executable, "-m", "bench.roundtrips", "--worker",
                                       "--ops", args.ops], cwd=ROOT, env=env,
                                      capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    print(f"{mode} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                _flush(redis.url, memcached.url)
    finally:
        redis.stop()
        memcached.stop()
    print(report(results))
    return 0


def _flush(redis_url: str, memcached_url: str) -> None:
    import redis as redis_py
    from pymemcache.client.base import Client

    redis_py.Redis.from_url(redis_url).flushall()
    host, port = memcached_url.rsplit(":", 1)
    Client((host.split("//")[-1], int(port))).flush_all()


def report(results: list[dict]) -> str:
    """A table: per mode, per operation, round trips (storage calls for the
    in-process store) and SQL statements per call."""
    lines = ["| mode | operation | case | store round trips | storage calls | SQL |",
             "|---|---|---|---|---|---|"]
    for res in results:
        for op, cases in res["ops"].items():
            for case, (trips, calls, sql) in cases.items():
                lines.append(f"| `{res['mode']}` | `{op}` | {case} | {trips:g} | "
                             f"{calls:g} | {sql:g} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
