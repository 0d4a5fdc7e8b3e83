"""querystash.memoize against no cache, per-query querystash and cacheops' cached_as.

    .venv-bench/bin/python -m bench.memoize [--rounds 4] [--dbs sqlite,postgres]
        [--stores redis,memcached,locmem] [--out FILE]

(``bench/run`` builds ``.venv-bench``; ``bench/run --memoize`` runs this.)

A list page's work, twice: ``list_page(k)``, a function running 14 ORM
queries (a get, a prefetch, per-book counts, a count, an aggregate, a tag
ranking), and a template fragment evaluating a lazy queryset of 6 books with
each one's review count and tags (13 queries). Each is measured in four
modes, every mode in a process of its own (querystash and cacheops patch
Django globally), all on the same throwaway redis and the same data
(``bench/ops.py``'s seed):

- ``nocache``: plain Django;
- ``per-query``: querystash caching every query (the querystash-redis store);
- ``memoize``: the same, the function decorated with ``querystash.memoize``
  and the fragment inside ``{% memoize %}``; ``memoize (django-redis)``: on
  the core's store over a Django RedisCache alias instead;
- ``cached_as``: django-cacheops (every query cached too), the function
  decorated with ``cached_as(Author, Book, Book.tags.through, Tag, Review)``
  (every model it reads, listed by hand), the fragment inside cacheops'
  ``{% cached_as books 900 "book_list" k %}`` tag (its dependency: the
  queryset given; the reviews and tags it shows are not listed, as that tag
  takes one);
- ``memoize (memcached)``: ``querystash.memoize`` with the querystash-memcached
  plugin's store; ``memoize (built-in store)``: on the in-process store a
  LocMemCache alias becomes (no round trip: the hit's own CPU cost).

Hit: ``k`` fixed, one untimed call, then the mean of ``--inner`` calls per
sample, in wall time and in this process's CPU time (``hit CPU``: the
client's own work, round trip waits excluded; steadier on a loaded machine).
Miss: a ``k`` never used before in the process (the store is flushed
when each process starts, then one untimed miss puts the stamps / cacheops'
invalidation data in place, as on a warm site), timed one call at a time,
in wall time and CPU time (``miss CPU ÷ no cache``: steadier on a loaded
machine, where a miss's round trips wait longer than plain Django does).
The same process's figures vary by ±25% from one process to the next on a
shared 2-core machine, more than the miss's own cost; so each miss in a
querystash mode is followed by the plain code on another fresh ``k`` under
``querystash.disabled()`` (the read path's first test sends it to Django
unchanged), and ``miss ÷ no cache, same process`` divides the medians of
the two, which no difference between processes can move (range: the
per-process ratios); and the same for CPU time.
Rounds alternate the modes (A B C D A B C D ...); figures are medians of all
samples, ranges the min-max of the per-round medians. Writes a markdown table.

Where the scheduler puts the store server decides a hit's wall time: on the
worker's CPU a round trip is a switch on that CPU; on the other one the
worker sleeps in ``recv`` until a cross-CPU wake-up (~50 µs more on 2 cores,
about all of it in ``recv_into``; the client's own work is the same). It is
decided per process, and SQLite workers, busy in-process during their misses,
more often end up apart from the server than PostgreSQL ones (whose misses
wait on the database). ``--same-cpu N`` pins the store servers and every
worker to CPU ``N`` (PostgreSQL stays free), so every mode's round trip costs
the same; without it, compare the CPU column or run more rounds. It is for
hits: a miss's round trips then run the server's work on the worker's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: memoize mode -> (bench.modes name giving the settings, variant of the code)
MODES = {
    "nocache": ("nocache", "plain"),
    "per-query": ("querystash-redis", "plain"),
    "memoize": ("querystash-redis", "memoize"),
    "memoize (django-redis)": ("querystash-django-redis", "memoize"),
    "cached_as": ("cacheops", "cached_as"),
    "memoize (memcached)": ("querystash-memcached", "memoize"),
    "memoize (built-in store)": ("querystash-locmem", "memoize"),
}
#: the modes --stores leaves out unless it names their store
STORE_OF = {"memoize (memcached)": "memcached", "memoize (built-in store)": "locmem"}
HIT_K = 1
#: cold parameters: the function's and the fragment's, apart
FUNCTION_POOL = range(2, 226)
FRAGMENT_POOL = range(226, 451)

FRAGMENT = (
    "<ul>{% for b in books %}<li>{{ b.title }} ({{ b.reviews.count }}):"
    "{% for t in b.tags.all %} {{ t.name }}{% endfor %}</li>{% endfor %}</ul>"
)


# -- the code measured ---------------------------------------------------------------------


def list_page(k):
    """14 queries: what a list page's view does before rendering."""
    from django.db.models import Avg, Count

    from bench.benchproject.benchapp.models import Author, Book, Review, Tag

    author = Author.objects.get(pk=k)
    books = list(Book.objects.filter(author_id=k).order_by("id")[:8].prefetch_related("tags"))
    return {
        "author": (author.pk, author.name),
        "books": [(b.pk, b.title, str(b.price), [t.name for t in b.tags.all()],
                   b.reviews.count()) for b in books],
        "count": Book.objects.filter(author_id=k).count(),
        "reviews": Review.objects.filter(book__author_id=k).aggregate(avg=Avg("rating"),
                                                                     n=Count("id")),
        "top_tags": list(Tag.objects.filter(books__author_id=k).annotate(n=Count("id"))
                         .order_by("-n", "name")[:5].values_list("name", flat=True)),
    }


def fragment_renderer(variant: str):
    """``render(k)`` -> the fragment's HTML, with its lazy queryset in the context."""
    from django.template import Context, Engine

    from bench.benchproject.benchapp.models import Book

    if variant == "memoize":
        engine = Engine(libraries={"querystash": "querystash.templatetags.querystash"})
        source = '{% load querystash %}{% memoize "book_list" k %}' + FRAGMENT + \
            "{% endmemoize %}"
    elif variant == "cached_as":
        # cacheops' own fragment tag, inside the template as {% memoize %} is;
        # its one dependency is the queryset given (reviews and tags unlisted)
        engine = Engine(libraries={"cacheops": "cacheops.templatetags.cacheops"})
        source = '{% load cacheops %}{% cached_as books 900 "book_list" k %}' + FRAGMENT + \
            "{% endcached_as %}"
    else:
        engine = Engine()
        source = FRAGMENT
    template = engine.from_string(source)

    def render(k):
        books = Book.objects.filter(author_id=k).order_by("id")[:6]
        return template.render(Context({"books": books, "k": k}))

    return render


def build(variant: str):
    """(function, fragment) as the variant runs them."""
    render = fragment_renderer(variant)
    if variant == "memoize":
        import querystash

        return querystash.memoize(list_page), render
    if variant == "cached_as":
        from cacheops import cached_as

        from bench.benchproject.benchapp.models import Author, Book, Review, Tag

        deps = (Author, Book, Book.tags.through, Tag, Review)
        return cached_as(*deps, timeout=900)(list_page), render
    return list_page, render


# -- one process -----------------------------------------------------------------------------


def worker(args) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.benchproject.settings")
    import django

    django.setup()
    from django.conf import settings

    from bench.modes import MODES as BENCH_MODES
    from bench.stores import Store
    from bench.worker import QueryCounter

    if os.environ.get("BENCH_CPU"):
        os.sched_setaffinity(0, {int(os.environ["BENCH_CPU"])})
    mode = BENCH_MODES[os.environ["BENCH_MODE"]]
    Store(mode.store, settings.REDIS_URL, settings.MEMCACHED).flush()
    function, fragment = build(args.variant)
    # querystash's modes also time the plain code under querystash.disabled()
    # on fresh parameters, each right after a miss: a no-cache baseline in
    # the same process, immune to what differs between processes.
    baseline = "querystash" in mode.name
    plain_function, plain_fragment = build("plain")
    out = {}
    for name, fn, plain, pool in (("function", function, plain_function, FUNCTION_POOL),
                                  ("fragment", fragment, plain_fragment, FRAGMENT_POOL)):
        cold = iter(pool)
        cold_plain = reversed(pool)  # from the other end: never a parameter a miss used
        fn(next(cold))  # stamps / invalidation data in place, as on a warm site
        reference = None
        with QueryCounter() as plain_sql:
            reference = fn(HIT_K)
        hits, hits_cpu, misses, misses_cpu, disabled, disabled_cpu = [], [], [], [], [], []
        for _ in range(args.repeats):
            fn(HIT_K)
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.inner):
                fn(HIT_K)
            hits.append((time.perf_counter() - t0) / args.inner)
            hits_cpu.append((time.process_time() - c0) / args.inner)
            for _ in range(args.cold_inner):
                k = next(cold)
                t0, c0 = time.perf_counter(), time.process_time()
                fn(k)
                misses.append(time.perf_counter() - t0)
                misses_cpu.append(time.process_time() - c0)
                if baseline:
                    import querystash

                    k = next(cold_plain)
                    with querystash.disabled():
                        t0, c0 = time.perf_counter(), time.process_time()
                        plain(k)
                        disabled.append(time.perf_counter() - t0)
                        disabled_cpu.append(time.process_time() - c0)
        with QueryCounter() as hit_sql:
            again = fn(HIT_K)
        assert again == reference, f"{name}: a hit returned another result"
        out[name] = {"hit": hits, "hit_cpu": hits_cpu, "miss": misses,
                     "miss_cpu": misses_cpu, "disabled": disabled, "disabled_cpu": disabled_cpu,
                     "sql_first": plain_sql.n, "sql_hit": hit_sql.n}
    return out


# -- the driver ------------------------------------------------------------------------------


def run_process(env: dict, variant: str, args) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    try:
        cmd = [sys.executable, "-m", "bench.memoize", "--worker", "--variant", variant,
               "--repeats", str(args.repeats), "--inner", str(args.inner),
               "--cold-inner", str(args.cold_inner), "--json", out]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"{env['BENCH_MODE']}/{variant} failed:\n{proc.stderr[-3000:]}")
        return json.loads(Path(out).read_text())
    finally:
        Path(out).unlink(missing_ok=True)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def table(db: str, runs: dict) -> str:
    """runs: mode -> [per-round results]."""
    lines = [f"### {db}", "",
             "| code | mode | SQL per call (first call / hit) | hit µs (range) | hit CPU µs "
             "| no cache ÷ hit | miss µs | miss ÷ no cache | miss CPU ÷ no cache "
             "| same process: miss ÷ no cache (range) | same process: miss CPU ÷ no cache |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("function", "fragment"):
        def median(mode, figure, name=name):
            return statistics.median(s for r in runs[mode] for s in r[name][figure])

        base_hit, base_miss = median("nocache", "hit"), median("nocache", "miss")
        base_miss_cpu = median("nocache", "miss_cpu")
        for mode in runs:
            if not runs[mode]:
                continue
            per_round = [statistics.median(r[name]["hit"]) for r in runs[mode]]
            hit, miss = median(mode, "hit"), median(mode, "miss")
            cpu, miss_cpu = median(mode, "hit_cpu"), median(mode, "miss_cpu")
            first = runs[mode][0][name]
            same = same_cpu = "–"
            if all(r[name].get("disabled") for r in runs[mode]):
                ratios = [statistics.median(r[name]["miss"]) / statistics.median(
                    r[name]["disabled"]) for r in runs[mode]]
                same = (f"{median(mode, 'miss') / median(mode, 'disabled'):.2f}× "
                        f"({min(ratios):.2f}–{max(ratios):.2f})")
                same_cpu = f"{median(mode, 'miss_cpu') / median(mode, 'disabled_cpu'):.2f}×"
            lines.append(
                f"| {name} | {mode} | {first['sql_first']} / {first['sql_hit']} "
                f"| {us(hit)} ({us(min(per_round))}–{us(max(per_round))}) | {us(cpu)} "
                f"| {base_hit / hit:.1f}× | {us(miss)} | {miss / base_miss:.2f}× "
                f"| {miss_cpu / base_miss_cpu:.2f}× | {same} | {same_cpu} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--repeats", type=int, default=8, help="samples per process and figure")
    p.add_argument("--inner", type=int, default=20, help="calls per hit sample")
    p.add_argument("--cold-inner", type=int, default=3, help="misses per sample")
    p.add_argument("--dbs", default="sqlite,postgres")
    p.add_argument("--stores", default="redis,memcached,locmem",
                   help="stores memoize is measured on (redis always: the peers use it)")
    p.add_argument("--same-cpu", type=int, metavar="N",
                   help="pin the store servers and every worker to CPU N (see above)")
    p.add_argument("--out", default=str(ROOT / "bench" / ".results" / "memoize.md"))
    p.add_argument("--baseline-core", help="also run the memoize modes on the core package "
                   "in this directory (e.g. `git archive main core | tar -x -C DIR`, then "
                   "DIR/core), interleaved")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        Path(args.json).write_text(json.dumps(worker(args)))
        return 0

    from bench import driver

    dbs = driver.reachable(args.dbs)
    stores = set(args.stores.split(","))
    modes = {m: (*v, None) for m, v in MODES.items() if STORE_OF.get(m, "redis") in stores
             or m == "nocache"}
    if args.baseline_core:
        # The memoize modes again on another copy of the core (PYTHONPATH
        # comes before the editable install), interleaved in the same rounds.
        core = str(Path(args.baseline_core).resolve())
        for mode, (bench_mode, variant, _) in list(modes.items()):
            if variant == "memoize":
                modes[f"{mode}, baseline"] = (bench_mode, variant, core)
    results: dict[str, dict[str, list]] = {db: {m: [] for m in modes} for db in dbs}
    started = time.monotonic()
    with driver.seeded_site(dbs, memcached="memcached" in stores) as (site, redis, memcached):
        if args.same_cpu is not None:
            for server in (redis, memcached):
                if server is not None:
                    os.sched_setaffinity(server.process.pid, {args.same_cpu})
        base = {**site, "BENCH_CPU": "" if args.same_cpu is None else str(args.same_cpu)}
        for r in range(args.rounds):
            for db in dbs:
                for mode, (bench_mode, variant, core) in modes.items():
                    t0 = time.monotonic()
                    env = {**base, "BENCH_DB": db, "BENCH_MODE": bench_mode}
                    if core is not None:
                        env["PYTHONPATH"] = core
                    results[db][mode].append(run_process(env, variant, args))
                    driver.say(f"round {r + 1}/{args.rounds} {db:8} {mode:34} "
                               f"{time.monotonic() - t0:4.1f}s")
    text = "\n\n".join(table(db, results[db]) for db in dbs)
    command = "python -m bench.memoize " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"`{command.strip()}`: {args.rounds} rounds × {args.repeats} samples "
            f"(hit: mean of {args.inner} calls; miss: {args.cold_inner} calls) per mode, "
            f"{time.monotonic() - started:.0f} s, load {driver.loadavg()}"
            + ("" if args.same_cpu is None else
               f", store servers and workers on CPU {args.same_cpu}")
            + f"\n\n{text}\n")
    driver.publish(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
