"""What a memoized miss costs in CPU work, counted in instructions, not seconds.

    .venv-bench/bin/python -m bench.instructions [--calls 20] [--dbs sqlite,postgres]
        [--stores redis,django-redis,memcached,locmem]

(``bench/run --instructions`` runs this.) On a shared 2-core machine the
same process's CPU time per call varies by ±25% from one process to the
next, more than what memoize adds to a miss, so timings need many rounds
to say whether a miss stays under 1.3× no cache. Instructions do not vary:
``valgrind --tool=callgrind`` counts what the process executes, the same
for the same code, inputs and environment whatever else runs on the machine.

For each store and database, three processes of ``bench/memoize.py``'s code
run under callgrind, each after the same warm-up (two memoized misses and
two plain calls, so imports and first-call work are outside the count):

- ``base``: the warm-up alone;
- ``plain``: then ``--calls`` calls of the plain code under
  ``querystash.disabled()``, each on a parameter never read before;
- ``memoize``: then ``--calls`` memoized misses, each on a new parameter.

Instructions per call are (process − base) ÷ calls. The store and the
database servers are other processes, not counted: a miss's round trips
(the probe and the fill: ``bench.roundtrips``) cost wall time on top of
this, and are what a timing adds. Python code under callgrind runs about 50×
slower; the counts do not change with that.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: store -> the bench mode whose settings give it (memoize's own modes)
STORES = {
    "redis": "querystash-redis",
    "django-redis": "querystash-django-redis",
    "memcached": "querystash-memcached",
    "locmem": "querystash-locmem",
}
CODES = ("function", "fragment")


def worker(code: str, variant: str, calls: int) -> None:
    """One counted process: the warm-up, then ``calls`` calls of ``variant``."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.benchproject.settings")
    import django

    django.setup()
    from django.conf import settings

    import querystash
    from bench import memoize
    from bench.modes import MODES
    from bench.stores import Store

    Store(MODES[os.environ["BENCH_MODE"]].store, settings.REDIS_URL,
          settings.MEMCACHED).flush()
    pick = 0 if code == "function" else 1
    memoized, plain = memoize.build("memoize")[pick], memoize.build("plain")[pick]
    fresh = iter(memoize.FUNCTION_POOL if code == "function" else memoize.FRAGMENT_POOL)
    for _ in range(2):
        memoized(next(fresh))
    with querystash.disabled():
        for _ in range(2):
            plain(next(fresh))
    if variant == "plain":
        with querystash.disabled():
            for _ in range(calls):
                plain(next(fresh))
    elif variant == "memoize":
        for _ in range(calls):
            memoized(next(fresh))


def counted(env: dict, code: str, variant: str, calls: int) -> int:
    """Instructions the worker process executed (callgrind's total)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
               sys.executable, "-m", "bench.instructions", "--worker", code, variant,
               str(calls)]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=1800)
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or found is None:
            raise SystemExit(f"{env['BENCH_MODE']} {code} {variant} failed:\n"
                             f"{proc.stderr[-3000:]}")
        return int(found.group(1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=20, help="counted calls per process")
    p.add_argument("--dbs", default="sqlite,postgres")
    p.add_argument("--stores", default=",".join(STORES))
    p.add_argument("--out", default=str(ROOT / "bench" / ".results" / "instructions.md"))
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        code, variant, calls = args.worker
        worker(code, variant, int(calls))
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    if args.calls > 100:
        p.error("--calls: at most 100 (the parameter pools)")

    from bench import driver

    dbs = driver.reachable(args.dbs)
    stores = args.stores.split(",")
    unknown = set(stores) - set(STORES)
    if unknown:
        p.error(f"--stores: unknown {sorted(unknown)}")
    rows = []
    started = time.monotonic()
    with driver.seeded_site(dbs) as (base, _, _):
        for db in dbs:
            for store in stores:
                env = {**base, "BENCH_DB": db, "BENCH_MODE": STORES[store]}
                for code in CODES:
                    n = {v: counted(env, code, v, args.calls if v != "base" else 0)
                         for v in ("base", "plain", "memoize")}
                    plain = (n["plain"] - n["base"]) / args.calls
                    memo = (n["memoize"] - n["base"]) / args.calls
                    rows.append((db, store, code, plain, memo))
                    driver.say(f"{db:8} {store:12} {code:8} plain {plain / 1e6:6.2f} M, "
                               f"memoize miss {memo / 1e6:6.2f} M: {memo / plain:.3f}×")
    command = "python -m bench.instructions " + " ".join(
        argv if argv is not None else sys.argv[1:])
    lines = [f"`{command.strip()}`: {args.calls} counted calls per process, "
             f"{time.monotonic() - started:.0f} s", "",
             "| database | store | code | no cache, M instructions per call "
             "| memoized miss, M instructions per call | miss ÷ no cache |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {db} | {store} | {code} | {plain / 1e6:.2f} | {memo / 1e6:.2f} "
              f"| {memo / plain:.3f}× |" for db, store, code, plain, memo in rows]
    driver.publish(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
