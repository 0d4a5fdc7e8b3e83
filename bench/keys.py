"""What the injective key encoder costs on a hit, against the old repr() key.

    python -m bench.keys [--rounds 101] [--inner 50]

One process, the querystash-locmem mode (SQLite unless BENCH_DB says
otherwise; a temporary database is created and seeded when BENCH_SQLITE_PATH
is unset). Both key functions are installed on the same runtime in turn, so
the two measure the same hit path but for the key: each round takes one
sample of every (operation, key function) pair, the order rotating from
round to round; figures are medians over rounds (many short samples: a busy
machine moves single samples a lot, their median little). Also times the key
function alone on each operation's query (the raw cost per key).

The repr() key function lives here only as the reference: it is not an
encoding (psycopg's Jsonb abbreviates its repr, a memoryview prints its
address), which is why the core no longer uses it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from hashlib import blake2b


def repr_key_function(config):
    """The core's key function before issue 14, verbatim."""
    from django.db import connections

    from querystash import __version__

    namespace = f"{config['KEY_PREFIX']}:{__version__}:r:"

    def key(info) -> str:
        db = connections[info.alias].settings_dict
        text = repr((db["ENGINE"], str(db["NAME"]), db.get("HOST"), db.get("PORT"),
                     info.alias, info.shape, info.sql, info.params))
        digest = blake2b(text.encode("utf-8", "surrogatepass"), digest_size=20)
        return namespace + digest.hexdigest()

    return key


def operations():
    from bench.benchproject.benchapp.models import Book

    ids = list(range(1, 21))
    return {
        "get-by-pk": lambda: Book.objects.get(pk=1),
        "filter, 20 params": lambda: list(Book.objects.filter(id__in=ids).order_by("id")),
        "filter, str + ints": lambda: list(Book.objects.filter(
            title__startswith="Book 1", year__gte=1900, pages__gte=1).order_by("id")[:5]),
    }


def _time(call, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - t0) / n * 1e6


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=101)
    p.add_argument("--inner", type=int, default=50, help="hits per sample")
    args = p.parse_args(argv)

    os.environ.setdefault("BENCH_MODE", "querystash-locmem")
    tmp = None
    if os.environ.get("BENCH_DB", "sqlite") == "sqlite" and "BENCH_SQLITE_PATH" not in os.environ:
        tmp = tempfile.TemporaryDirectory()
        os.environ["BENCH_SQLITE_PATH"] = os.path.join(tmp.name, "keys.sqlite3")
    from bench.worker import setup_django

    setup_django()
    from django.core.management import call_command
    from django.db import connection

    from bench import ops
    from querystash import _runtime

    call_command("migrate", verbosity=0)
    if not ops.seeded():
        ops.seed()
    rt = _runtime.current
    assert rt is not None and rt.enabled, "querystash is not enabled in this mode"
    keys = {"repr (old)": repr_key_function(rt.config), "encoder (new)": rt.key_function}
    reads = operations()

    # The QueryInfo of each operation's query, for the key function alone.
    infos = {}
    for name, read in reads.items():
        seen = []
        rt.key_function = lambda info, seen=seen: seen.append(info) or keys["encoder (new)"](info)
        read()
        infos[name] = seen[0]

    pairs = [(op, k) for op in reads for k in keys]
    hit: dict = {pair: [] for pair in pairs}
    raw: dict = {pair: [] for pair in pairs}
    for name in keys:  # warm: fill each key function's entries
        rt.key_function = keys[name]
        for read in reads.values():
            read()
            read()
    rt.stats.reset()
    for r in range(args.rounds):
        order = pairs[r % len(pairs):] + pairs[:r % len(pairs)]
        for op, k in order:
            rt.key_function = keys[k]
            hit[op, k].append(_time(reads[op], args.inner))
            raw[op, k].append(_time(partial(keys[k], infos[op]), args.inner * 10))
    rt.key_function = keys["encoder (new)"]
    totals = rt.stats.totals()
    assert totals["hits"] == args.rounds * args.inner * len(pairs), totals  # all hits

    def med(samples):
        return statistics.median(samples)

    print(f"bench.keys: {connection.vendor}, querystash-locmem, {args.rounds} rounds x "
          f"{args.inner} hits (key alone: x{args.inner * 10}), Python {sys.version.split()[0]}")
    kinds = "; ".join(f"{op}: " + ", ".join(sorted({type(p).__name__ for p in i.params}))
                      for op, i in infos.items())
    print(f"{totals['hits']} timed reads, all hits; params: {kinds}")
    print()
    print("| operation | key function | hit µs | hit ratio | key alone µs | key ratio |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for op in reads:
        base_hit, base_raw = med(hit[op, "repr (old)"]), med(raw[op, "repr (old)"])
        for k in keys:
            h, k_raw = med(hit[op, k]), med(raw[op, k])
            print(f"| {op} | {k} | {h:.2f} | {h / base_hit:.3f} | {k_raw:.2f} | "
                  f"{k_raw / base_raw:.3f} |")
    if tmp is not None:
        connection.close()
        tmp.cleanup()


if __name__ == "__main__":
    main()
