"""One benchmark mode in one process: python -m bench.worker --out FILE [options].

The mode, database and servers come from the environment (see
benchproject/settings.py). ``--seed`` fills the database and exits. Otherwise
the worker flushes the store, runs ``--repeats`` rounds in which every
operation takes one sample of each figure (hit, raw floor, cold miss, write),
the operations' order rotating from round to round, then optionally measures
store memory and a mixed read/write load, and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.benchproject.settings")
    import django

    django.setup()


class QueryCounter:
    """Counts the SQL statements sent to the database inside the block."""

    def __init__(self, alias="default"):
        from django.db import connections

        self.connection = connections[alias]
        self.n = 0

    def __call__(self, execute, sql, params, many, context):
        self.n += 1
        return execute(sql, params, many, context)

    def __enter__(self):
        self._cm = self.connection.execute_wrapper(self)
        self._cm.__enter__()
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("django", "querystash", "querystash-redis", "querystash-memcached",
                 "querystash-fields", "django-cacheops", "django-cachalot", "redis",
                 "hiredis", "pymemcache", "psycopg"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    from django.db import connection

    if connection.vendor == "postgresql":
        v = connection.pg_version
        out["postgresql"] = f"{v // 10000}.{v % 10000}"
    else:
        import sqlite3

        out["sqlite"] = sqlite3.sqlite_version
    return out


class Bench:
    def __init__(self, args):
        from django.conf import settings

        from bench import ops
        from bench.modes import MODES
        from bench.stores import Store, invalidation_pattern

        self.args = args
        self.mode = MODES[os.environ.get("BENCH_MODE", "nocache")]
        self.redis_url = settings.REDIS_URL
        self.memcached = settings.MEMCACHED
        self.store = Store(self.mode.store, self.redis_url, self.memcached)
        self.inv_pattern = invalidation_pattern(self.mode.lib)
        self.ops = ops
        self.store.flush()  # what an earlier mode left in the shared server
        self.writer = ops.Writer()
        rnd = random.Random(7)
        self.cold = {}
        for name, (_, _, space) in ops.READ_OPS.items():
            pool = list(range(ops.HIT_K + 1, space + 1))
            rnd.shuffle(pool)
            self.cold[name] = pool
        books = None
        if self.mode.name == "querystash-fields":
            from bench.benchproject.benchapp.models import Book

            books = Book.objects.cache("author")  # field-scoped: author_id=X
        self.books_for_write_reads = books
        #: querystash's modes also time plain Django in this process, under
        #: querystash.disabled(): a same-process no-cache baseline
        self.disabled = None
        if self.mode.lib == "querystash":
            import querystash

            self.disabled = querystash.disabled
        self.store.flush()

    # -- one sample of each figure ---------------------------------------------------

    def hit_sample(self, fn, inner):
        fn(self.ops.HIT_K)  # warm: a write of the previous round may have invalidated it
        k = self.ops.HIT_K
        t0 = time.perf_counter()
        for _ in range(inner):
            fn(k)
        return (time.perf_counter() - t0) / inner

    def plain_hit_sample(self, fn, inner):
        """The hit's query as plain Django runs it, in this process: under
        ``querystash.disabled()`` the read path's first test hands it to
        Django unchanged (the cursor's write check still runs: a dict lookup)."""
        with self.disabled():
            return self.hit_sample(fn, inner)

    def cold_sample(self, name, fn, n, plain=False):
        """``plain``: fresh parameters too, as plain Django in this process."""
        pool = self.cold[name]
        if len(pool) < n:
            raise RuntimeError(f"{name}: out of never-read parameters; lower --repeats")
        ks = [pool.pop() for _ in range(n)]
        with self.disabled() if plain else contextlib.nullcontext():
            t0 = time.perf_counter()
            for k in ks:
                fn(k)
            return (time.perf_counter() - t0) / n

    def write_sample(self, n):
        w = self.writer
        total = 0.0
        for _ in range(n):
            book = w.next_book()
            t0 = time.perf_counter()
            w.save(book)
            total += time.perf_counter() - t0
        return total / n

    def write_read_sample(self, n, affected):
        w, read = self.writer, self.ops.filter_20
        books = self.books_for_write_reads
        t_write = t_read = 0.0
        for _ in range(n):
            book = w.next_book()
            author = book.author_id if affected else w.other_author(book)
            read(author, books)  # cached before the write
            t0 = time.perf_counter()
            w.save(book)
            t1 = time.perf_counter()
            read(author, books)
            t2 = time.perf_counter()
            t_write += t1 - t0
            t_read += t2 - t1
        return t_write / n, t_read / n

    # -- the floor ---------------------------------------------------------------------

    def make_floor(self, fn):
        from bench.floor import Floor, capture

        if self.mode.store not in ("redis", "memcached"):
            return None
        fn(self.ops.HIT_K)
        keys = []
        rt = None
        if self.mode.lib == "querystash":
            from querystash import _runtime

            rt = _runtime.current
            original = rt.key_function

            def recording(info):
                key = original(info)
                keys.append(key)
                return key

            rt.key_function = recording
        try:
            with capture() as calls:
                fn(self.ops.HIT_K)
        finally:
            if rt is not None:
                rt.key_function = original
        try:
            return Floor(calls, self.redis_url, self.memcached,
                         qs_secret=rt.secret if rt else None, qs_keys=keys or None)
        except Exception as exc:  # reported, not hidden: the floor column says why
            return f"no floor: {exc!r}"

    # -- phases --------------------------------------------------------------------------

    def timings(self):
        a, ops = self.args, self.ops
        names = list(ops.READ_OPS)
        res = {name: {"hit": [], "cold": [], "floor": []} for name in names}
        res |= {"write": {"write": []},
                "write_read_affected": {"write": [], "read": []},
                "write_read_unaffected": {"write": [], "read": []}}
        floors = {}
        for name in names:
            fn = ops.READ_OPS[name][0]
            floor = self.make_floor(fn)
            if isinstance(floor, str):
                res[name]["floor_error"] = floor
                floor = None
            elif floor is not None:
                res[name]["floor_calls"] = floor.describe()
            floors[name] = floor
            fn(ops.HIT_K)
            with QueryCounter() as qc:
                fn(ops.HIT_K)
            res[name]["hit_db_queries"] = qc.n
        for r in range(a.repeats):
            gc.collect()
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                fn = ops.READ_OPS[name][0]
                res[name]["hit"].append(self.hit_sample(fn, a.inner))
                if floors[name] is not None:
                    res[name]["floor"].append(floors[name].sample(a.inner))
                res[name]["cold"].append(self.cold_sample(name, fn, a.cold_inner))
            res["write"]["write"].append(self.write_sample(a.write_inner))
            for affected in (r % 2 == 0, r % 2 == 1):
                key = "write_read_affected" if affected else "write_read_unaffected"
                w, rd = self.write_read_sample(a.write_inner, affected)
                res[key]["write"].append(w)
                res[key]["read"].append(rd)
            if self.disabled is not None:
                # The same-process baseline last in the round, after every
                # sample the other modes take too, so that its work (and the
                # garbage it leaves) never precedes one of them in a round:
                # the next round begins with gc.collect().
                for name in order:
                    fn = ops.READ_OPS[name][0]
                    res[name].setdefault("hit_plain", []).append(
                        self.plain_hit_sample(fn, a.inner))
                    res[name].setdefault("cold_plain", []).append(
                        self.cold_sample(name, fn, a.cold_inner, plain=True))
        # how many SQL statements one read after a write costs (0 = served from cache)
        for key, affected in (("write_read_affected", True), ("write_read_unaffected", False)):
            book = self.writer.next_book()
            author = book.author_id if affected else self.writer.other_author(book)
            ops.filter_20(author, self.books_for_write_reads)
            self.writer.save(book)
            with QueryCounter() as qc:
                ops.filter_20(author, self.books_for_write_reads)
            res[key]["read_db_queries"] = qc.n
        return res

    def memory(self):
        """Store size after N distinct cached queries, then under M writes each
        followed by re-reads of those queries (a steady working set)."""
        from bench.benchproject.benchapp.models import Book

        a = self.args
        self.store.flush()
        gc.collect()
        out = {"empty": self.store.memory(self.inv_pattern)}

        def query(i):
            if i % 2:
                return Book.objects.get(pk=i + 1)
            return list(Book.objects.filter(id__gt=i).order_by("id")[:5])

        for i in range(a.mem_n):
            query(i)
        out["after_reads"] = self.store.memory(self.inv_pattern)
        rnd = random.Random(3)
        checkpoints = []
        step = max(1, a.mem_m // 5)
        for j in range(1, a.mem_m + 1):
            self.writer.save(self.writer.next_book())
            for _ in range(a.mem_reads):
                query(rnd.randrange(a.mem_n))
            if j % step == 0:
                checkpoints.append({"writes": j, **self.store.memory(self.inv_pattern)})
        out["under_writes"] = checkpoints
        out["n_queries"], out["m_writes"], out["reads_per_write"] = a.mem_n, a.mem_m, a.mem_reads
        return out

    def mixed(self):
        """A fixed, seeded mix (90% reads over a skewed hot set, 10% writes)."""
        ops, a = self.ops, self.args
        from bench.benchproject.benchapp.models import Book

        self.store.flush()
        rnd = random.Random(11)
        plan = []
        names = list(ops.READ_OPS)
        for _ in range(a.mixed):
            if rnd.random() < 0.1:
                plan.append(("write", rnd.randrange(1, 50 * ops.BOOKS_PER_AUTHOR + 1)))
            else:
                plan.append((rnd.choice(names), min(int(rnd.expovariate(1 / 8)) + 1, 50)))
        books = {b.id: b for b in Book.objects.filter(id__lte=50 * ops.BOOKS_PER_AUTHOR)}
        self.store.flush()
        t0 = time.perf_counter()
        with QueryCounter() as qc:
            for name, k in plan:
                if name == "write":
                    self.writer.save(books[k])
                else:
                    ops.READ_OPS[name][0](k)
        return {"ops": a.mixed, "writes": sum(1 for n, _ in plan if n == "write"),
                "db_queries": qc.n, "seconds": time.perf_counter() - t0}


def querystash_stats():
    try:
        import querystash
        from querystash import _runtime
    except ImportError:
        return None
    if _runtime.current is None:
        return None
    rt = _runtime.current
    return {"totals": dict(rt.stats.totals()), "enabled": rt.enabled,
            "storage": type(rt.storage).__module__ + "." + type(rt.storage).__qualname__,
            "problems": list(rt.problems), "version": querystash.__version__
            if hasattr(querystash, "__version__") else None}


def check_mode():
    """A querystash mode whose runtime is off would measure plain Django: refuse."""
    from bench.modes import MODES

    mode = MODES[os.environ.get("BENCH_MODE", "nocache")]
    if mode.lib != "querystash":
        return
    from querystash import _runtime

    rt = _runtime.current
    if rt is None or not rt.enabled:
        problems = rt.problems if rt is not None else ["querystash is not installed"]
        raise SystemExit(f"{mode.name}: querystash is off: {'; '.join(problems)}")
    check_plugins(mode)


def check_plugins(mode) -> list[str]:
    """The querystash plugins registered in this process; a full-install mode
    that misses one of them (a QUERYSTASH_LOAD_PLUGINS in the environment, a
    plugin that failed to load) would measure something else: refuse."""
    from querystash import _runtime, plugins

    loaded = sorted(name for name, _ in plugins.pm.list_name_plugin())
    if mode.full:
        wanted = {p.removeprefix("querystash-") for p in mode.plugins}
        missing = sorted(wanted - set(loaded))
        if missing:
            errors = "; ".join(str(e) for e in plugins.load_errors)
            raise SystemExit(f"{mode.name}: a full install, but plugin(s) {missing} are not "
                             f"loaded (loaded: {loaded}){'; ' + errors if errors else ''}")
        storage = type(_runtime.current.storage).__module__
        expected = {"redis": "querystash_redis", "memcached": "querystash_memcached",
                    "locmem": "querystash."}[mode.store]
        if not storage.startswith(expected):
            raise SystemExit(f"{mode.name}: the store is {storage}, not {expected}*")
    return loaded


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the JSON here (default: stdout)")
    p.add_argument("--seed", action="store_true", help="fill the database and exit")
    p.add_argument("--repeats", type=int, default=10, help="rounds of samples")
    p.add_argument("--inner", type=int, default=20, help="calls per hit / floor sample")
    p.add_argument("--cold-inner", type=int, default=3, help="distinct queries per cold sample")
    p.add_argument("--write-inner", type=int, default=5, help="writes per write sample")
    p.add_argument("--mem-n", type=int, default=0, help="distinct queries (0: no memory phase)")
    p.add_argument("--mem-m", type=int, default=200, help="writes in the memory phase")
    p.add_argument("--mem-reads", type=int, default=4, help="re-reads after each write")
    p.add_argument("--mixed", type=int, default=0, help="operations of mixed load (0: none)")
    return p.parse_args(argv)


def run(args) -> dict:
    from django.db import connection

    from bench import ops

    connection.ensure_connection()
    check_mode()
    bench = Bench(args)
    if not ops.seeded():
        raise SystemExit("the database is not seeded: run `python -m bench.worker --seed` first")
    out = {"mode": bench.mode.name, "db": connection.vendor, "pid": os.getpid(),
           "versions": versions(), "config": vars(args),
           "descriptions": ops.OP_DESCRIPTIONS}
    t0 = time.perf_counter()
    out["ops"] = bench.timings()
    if args.mem_n:
        out["memory"] = bench.memory()
    if args.mixed:
        out["mixed"] = bench.mixed()
    out["querystash"] = querystash_stats()
    if bench.mode.lib == "querystash":
        out["querystash"]["plugins"] = check_plugins(bench.mode)
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv=None):
    args = parse_args(argv)
    setup_django()
    if args.seed:
        from django.core.management import call_command

        from bench import ops

        call_command("migrate", verbosity=0)
        result = {"seeded": False} if ops.seeded() else {"seeded": True, **ops.seed()}
    else:
        result = run(args)
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
